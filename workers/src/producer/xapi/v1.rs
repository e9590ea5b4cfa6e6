//! v1.1 statuses (old replay files) converted to v2 tweets.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value};

#[derive(Debug, thiserror::Error)]
pub(crate) enum ConvertError {
    #[error("v1.1 status has no id_str")]
    NoId,
    #[error("v1.1 status {id} has no text or full_text")]
    NoText { id: String },
    #[error("v1.1 status {id} has an unparseable created_at {value:?}")]
    CreatedAt { id: String, value: String },
}

/// Converts a v1.1 status (as in old replay files) to the v2 tweet JSON the
/// producer publishes.
pub(crate) fn v1_status_to_v2(status: &Value) -> Result<Value, ConvertError> {
    let s = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
    let n = |v: &Value, k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(0);
    let id = s(status, "id_str").ok_or(ConvertError::NoId)?;
    let text = status
        .get("extended_tweet")
        .and_then(|e| s(e, "full_text"))
        .or_else(|| s(status, "full_text"))
        .or_else(|| s(status, "text"))
        .ok_or_else(|| ConvertError::NoText { id: id.clone() })?;
    let mut out = Map::new();
    out.insert("id".into(), Value::String(id.clone()));
    out.insert("text".into(), Value::String(text));
    if let Some(raw) = s(status, "created_at") {
        let t = DateTime::parse_from_str(&raw, "%a %b %d %H:%M:%S %z %Y").map_err(|_| {
            ConvertError::CreatedAt {
                id: id.clone(),
                value: raw,
            }
        })?;
        out.insert(
            "created_at".into(),
            Value::String(
                t.with_timezone(&Utc)
                    .to_rfc3339_opts(SecondsFormat::Millis, true),
            ),
        );
    }
    if let Some(lang) = s(status, "lang") {
        out.insert("lang".into(), Value::String(lang));
    }
    if let Some(author) = status.get("user").and_then(|u| s(u, "id_str")) {
        out.insert("author_id".into(), Value::String(author));
    }
    out.insert(
        "public_metrics".into(),
        serde_json::json!({
            "retweet_count": n(status, "retweet_count"),
            "reply_count": n(status, "reply_count"),
            "like_count": n(status, "favorite_count"),
            "quote_count": n(status, "quote_count"),
        }),
    );
    let entities = status
        .get("extended_tweet")
        .and_then(|e| e.get("entities"))
        .or_else(|| status.get("entities"));
    if let Some(ent) = entities {
        let indices = |v: &Value| {
            let i = v.get("indices").and_then(Value::as_array);
            let at = |k: usize| {
                i.and_then(|a| a.get(k))
                    .and_then(Value::as_u64)
                    .unwrap_or(0)
            };
            (at(0), at(1))
        };
        let list = |k: &str| {
            ent.get(k)
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        };
        let hashtags: Vec<Value> = list("hashtags")
            .iter()
            .filter_map(|h| {
                let (start, end) = indices(h);
                Some(serde_json::json!({"start": start, "end": end, "tag": s(h, "text")?}))
            })
            .collect();
        let mentions: Vec<Value> = list("user_mentions")
            .iter()
            .filter_map(|m| {
                let (start, end) = indices(m);
                let mut v = serde_json::json!({"start": start, "end": end, "username": s(m, "screen_name")?});
                if let (Some(obj), Some(uid)) = (v.as_object_mut(), s(m, "id_str")) {
                    obj.insert("id".into(), Value::String(uid));
                }
                Some(v)
            })
            .collect();
        let mut e = Map::new();
        if !hashtags.is_empty() {
            e.insert("hashtags".into(), Value::Array(hashtags));
        }
        if !mentions.is_empty() {
            e.insert("mentions".into(), Value::Array(mentions));
        }
        if !e.is_empty() {
            out.insert("entities".into(), Value::Object(e));
        }
    }
    Ok(Value::Object(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::producer::xapi::Tweet;
    use chrono::TimeZone;
    use serde_json::json;

    #[test]
    fn converts_v1_status() {
        let v1 = json!({
            "id": 1050118621198921728u64,
            "id_str": "1050118621198921728",
            "text": "short…",
            "full_text": "To make room for more expression, we will now count all emojis as equal #emoji @TwitterDev",
            "created_at": "Wed Oct 10 20:19:24 +0000 2018",
            "lang": "en",
            "user": {"id_str": "6253282", "screen_name": "TwitterAPI"},
            "favorite_count": 42,
            "retweet_count": 7,
            "entities": {
                "hashtags": [{"text": "emoji", "indices": [72, 78]}],
                "user_mentions": [{"screen_name": "TwitterDev", "id_str": "2244994945", "indices": [79, 90]}]
            }
        });
        let v2 = v1_status_to_v2(&v1).unwrap();
        assert_eq!(v2["id"], "1050118621198921728");
        assert_eq!(v2["created_at"], "2018-10-10T20:19:24.000Z");
        assert_eq!(v2["author_id"], "6253282");
        let t: Tweet = serde_json::from_value(v2).unwrap();
        assert!(t.text.starts_with("To make room"));
        assert_eq!(t.lang.as_deref(), Some("en"));
        assert_eq!(t.like_count(), 42);
        assert_eq!(t.public_metrics.as_ref().unwrap().retweet_count, 7);
        let e = t.entities.unwrap();
        assert_eq!(e.hashtags[0].tag, "emoji");
        assert_eq!((e.hashtags[0].start, e.hashtags[0].end), (72, 78));
        assert_eq!(e.mentions[0].username, "TwitterDev");
        assert_eq!(
            t.created_at.unwrap(),
            Utc.with_ymd_and_hms(2018, 10, 10, 20, 19, 24).unwrap()
        );

        assert!(matches!(
            v1_status_to_v2(&json!({"text":"x"})),
            Err(ConvertError::NoId)
        ));
        assert!(matches!(
            v1_status_to_v2(&json!({"id_str":"1","text":"x","created_at":"yesterday"})),
            Err(ConvertError::CreatedAt { .. })
        ));
    }
}
