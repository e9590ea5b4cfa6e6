//! Numbers and JSON strings written into buffers the caller owns, as
//! `to_string` and serde_json would write them, without allocating.

/// `v` in decimal, formatted in `buf` (what `to_string` gives, without the
/// allocation).
pub(crate) fn decimal(mut v: u64, buf: &mut [u8; 20]) -> &str {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    // Only ASCII digits were written.
    std::str::from_utf8(&buf[i..]).unwrap_or("0")
}

/// Appends `s` as a JSON string, escaped as serde_json escapes it: `"`,
/// `\` and control characters (short forms where JSON has them), nothing
/// else.
pub(crate) fn push_json_str(out: &mut String, s: &str) {
    out.push('"');
    let bytes = s.as_bytes();
    let mut from = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let short = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0..0x20 => "",
            _ => continue,
        };
        // Escaped bytes are ASCII, so these slices end on char boundaries.
        out.push_str(&s[from..i]);
        if short.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.push_str("\\u00");
            out.push(HEX[usize::from(b >> 4)] as char);
            out.push(HEX[usize::from(b & 0xf)] as char);
        } else {
            out.push_str(short);
        }
        from = i + 1;
    }
    out.push_str(&s[from..]);
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_escaped_like_serde_json() {
        for s in [
            "",
            "plain",
            "quote \" and backslash \\",
            "controls \u{0}\u{1}\u{8}\u{c}\n\r\t\u{1f}\u{7f}",
            "non-ASCII: qué 今日 مباراة 🦀 / slash",
            "\"",
        ] {
            let mut out = String::new();
            push_json_str(&mut out, s);
            assert_eq!(out, serde_json::to_string(s).unwrap(), "{s:?}");
        }
    }

    #[test]
    fn decimal_is_to_string() {
        let mut buf = [0u8; 20];
        for v in [0, 1, 9, 10, 99, 100, 12345, u64::MAX / 3, u64::MAX] {
            assert_eq!(decimal(v, &mut buf), v.to_string());
        }
    }
}
