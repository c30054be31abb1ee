//! Parsing single fields of a row, with errors that name the file and line they came from.

use super::Origin;
use crate::error::Result;

/// An id field, refused when blank: an empty id would silently merge unrelated rows.
pub(crate) fn id<'a>(field: &'a str, what: &str, origin: &Origin) -> Result<&'a str> {
    if field.trim().is_empty() {
        return Err(origin.error(format!("empty {what}")));
    }
    Ok(field)
}

/// A finite number such as a rating or a duration.
pub(crate) fn number(field: &str, what: &str, origin: &Origin) -> Result<f32> {
    match field.trim().parse::<f32>() {
        Ok(value) if value.is_finite() => Ok(value),
        _ => Err(origin.error(format!("{what} {field:?} is not a finite number"))),
    }
}

/// Seconds since the epoch, written as an integer (`881250949`) or a float (`8.8e8`, as RecBole
/// writes them); fractions of a second are dropped.
pub(crate) fn timestamp(field: &str, origin: &Origin) -> Result<i64> {
    let field = field.trim();
    if let Ok(seconds) = field.parse::<i64>() {
        return Ok(seconds);
    }
    match field.parse::<f64>() {
        // `i64::MAX as f64` is 2^63, one past the largest i64, hence the strict bound.
        Ok(seconds) if seconds >= i64::MIN as f64 && seconds < i64::MAX as f64 => Ok(seconds.floor() as i64),
        _ => Err(origin.error(format!("timestamp {field:?} is not a number of seconds"))),
    }
}

/// Articles that library-sorted titles move to the end ("Misérables, Les").
const TRAILING_ARTICLES: [&str; 17] =
    ["A", "An", "The", "Les", "La", "Le", "L'", "Il", "Lo", "Das", "Der", "Die", "El", "Los", "Las", "Det", "Den"];

/// A title as people read it: a library-sorted title gets its leading article back, before any
/// parenthesised suffix such as the year ("Very Brady Sequel, A (1996)" → "A Very Brady Sequel
/// (1996)"). MovieLens and RecBole's copies of it sort titles so; the item id is left alone.
pub(crate) fn display_title(raw: &str) -> String {
    let raw = raw.trim();
    let (body, suffix) = match raw.find(" (") {
        Some(i) if raw.ends_with(')') => raw.split_at(i),
        _ => (raw, ""),
    };
    match body.rsplit_once(", ") {
        Some((rest, article)) if TRAILING_ARTICLES.contains(&article) => {
            let space = if article.ends_with('\'') { "" } else { " " };
            format!("{article}{space}{rest}{suffix}")
        }
        _ => raw.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_accept_integers_and_floats() {
        let o = Origin::new("f", 3);
        assert_eq!(timestamp("881250949", &o).unwrap(), 881_250_949);
        assert_eq!(timestamp("8.8e8", &o).unwrap(), 880_000_000);
        assert_eq!(timestamp("12.9", &o).unwrap(), 12);
        assert_eq!(timestamp("-1.5", &o).unwrap(), -2);
        assert_eq!(
            timestamp("1e30", &o).unwrap_err().to_string(),
            "f:3: timestamp \"1e30\" is not a number of seconds"
        );
        assert!(timestamp("NaN", &o).is_err());
    }

    #[test]
    fn numbers_must_be_finite_and_ids_non_empty() {
        let o = Origin::new("f", 2);
        assert_eq!(number(" 4.5", "rating", &o).unwrap(), 4.5);
        assert_eq!(number("inf", "rating", &o).unwrap_err().to_string(), "f:2: rating \"inf\" is not a finite number");
        assert!(number("x", "rating", &o).is_err());
        assert_eq!(id(" ", "user id", &o).unwrap_err().to_string(), "f:2: empty user id");
    }

    #[test]
    fn display_titles_put_the_article_back() {
        for (raw, shown) in [
            ("Very Brady Sequel, A (1996)", "A Very Brady Sequel (1996)"),
            ("Misérables, Les (1995)", "Les Misérables (1995)"),
            ("Postino, Il (1994)", "Il Postino (1994)"),
            ("Haunted World of Edward D. Wood Jr., The (1995)", "The Haunted World of Edward D. Wood Jr. (1995)"),
            ("City of Lost Children, The", "The City of Lost Children"),
            (
                "Shanghai Triad (Yao a yao yao dao waipo qiao) (1995)",
                "Shanghai Triad (Yao a yao yao dao waipo qiao) (1995)",
            ),
            ("Crumb (1994)", "Crumb (1994)"),
            ("Ed Wood, Part 2", "Ed Wood, Part 2"),
            ("Appartement, L'", "L'Appartement"),
        ] {
            assert_eq!(display_title(raw), shown);
        }
    }
}
