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
}
