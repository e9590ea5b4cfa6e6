//! Lexicon-based sentiment of a tweet's text.
//!
//! VADER was built for social-media text (emoji, slang, capitals, "!!!"), so
//! it suits tweets without a model to ship. The lexicon is the crate's own.

use serde::{Deserialize, Serialize};
use vader_sentiment::SentimentIntensityAnalyzer;

/// The conventional VADER cut-offs for calling a text positive or negative.
pub const POSITIVE_THRESHOLD: f64 = 0.05;
pub const NEGATIVE_THRESHOLD: f64 = -0.05;

/// The sentiment class of one tweet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Polarity {
    Positive,
    Negative,
    Neutral,
}

impl Polarity {
    pub fn of(compound: f64) -> Self {
        if compound >= POSITIVE_THRESHOLD {
            Polarity::Positive
        } else if compound <= NEGATIVE_THRESHOLD {
            Polarity::Negative
        } else {
            Polarity::Neutral
        }
    }
}

/// VADER's normalised compound score of `text`, in [-1, 1].
pub fn compound(text: &str) -> f64 {
    // The analyzer only borrows the crate's lazily built lexicons, so making
    // one per call costs nothing.
    let analyzer = SentimentIntensityAnalyzer::new();
    let c = analyzer
        .polarity_scores(text)
        .get("compound")
        .copied()
        .unwrap_or(0.0);
    // A NaN would poison every sum it joins; the lexicon should never yield
    // one, but text is untrusted.
    if c.is_finite() {
        c.clamp(-1.0, 1.0)
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn classifies_clear_cases() {
        assert_eq!(
            Polarity::of(compound("I love this, it is great and wonderful!")),
            Polarity::Positive
        );
        assert_eq!(
            Polarity::of(compound("This is terrible, awful and I hate it.")),
            Polarity::Negative
        );
        assert_eq!(
            Polarity::of(compound("The bus leaves at noon.")),
            Polarity::Neutral
        );
        assert_eq!(compound(""), 0.0);
    }

    #[test]
    fn negation_flips_the_sign() {
        assert!(compound("this is good") > 0.0);
        assert!(compound("this is not good") < 0.0);
    }

    #[test]
    fn thresholds_are_inclusive() {
        assert_eq!(Polarity::of(0.05), Polarity::Positive);
        assert_eq!(Polarity::of(0.049_999), Polarity::Neutral);
        assert_eq!(Polarity::of(-0.05), Polarity::Negative);
        assert_eq!(Polarity::of(-0.049_999), Polarity::Neutral);
    }

    proptest! {
        #[test]
        fn any_text_scores_within_bounds(text in any::<String>()) {
            let c = compound(&text);
            prop_assert!((-1.0..=1.0).contains(&c));
        }

        #[test]
        fn word_salad_scores_within_bounds(
            words in prop::collection::vec(
                prop::sample::select(vec![
                    "not", "very", "good", "bad", "but", "kind", "of", "at", "least",
                    "never", "so", "this", "without", "doubt", "the", "shit", "LOVE",
                    "!!!", "???", ":)", "😀", "💔", "isn't", "sort",
                ]),
                0..40,
            )
        ) {
            let c = compound(&words.join(" "));
            prop_assert!((-1.0..=1.0).contains(&c));
        }
    }
}
