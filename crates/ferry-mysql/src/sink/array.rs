//! PostgreSQL arrays as JSON arrays: MariaDB has no array type.
//!
//! The canonical text of an array is PostgreSQL's array literal (`{1,NULL,3}`,
//! `{"a b","c\"d"}`, `{{1,2},{3,4}}`); it becomes the JSON array PostgreSQL's own
//! `to_jsonb` gives: numbers and booleans as JSON numbers and booleans, JSON elements
//! embedded, every other element as a string of its canonical text, NULL as `null`,
//! dimensions as nested arrays. An array with lower bounds other than 1 (printed with a
//! `[0:2]=` prefix) has no JSON form and is refused, as are NaN and ±Infinity elements.

use ferry_core::LogicalType;

use super::types::Refusal;

/// The JSON array of the array literal `text` whose elements are of type `element`.
pub(crate) fn to_json(text: &str, element: &LogicalType) -> Result<String, Refusal> {
    if text.starts_with('[') {
        return Err("an array whose lower bound is not 1 has no JSON form".into());
    }
    let mut parser = Parser {
        bytes: text.as_bytes(),
        at: 0,
    };
    let mut out = String::with_capacity(text.len() + 2);
    parser.array(element, &mut out)?;
    if parser.at != text.len() {
        return Err(format!("{text:?} is not an array literal"));
    }
    Ok(out)
}

struct Parser<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn expect(&mut self, b: u8) -> Result<(), Refusal> {
        if self.peek() == Some(b) {
            self.at += 1;
            Ok(())
        } else {
            Err(format!("an array literal lacks {:?}", b as char))
        }
    }

    fn array(&mut self, element: &LogicalType, out: &mut String) -> Result<(), Refusal> {
        self.expect(b'{')?;
        out.push('[');
        if self.peek() == Some(b'}') {
            self.at += 1;
            out.push(']');
            return Ok(());
        }
        loop {
            if self.peek() == Some(b'{') {
                self.array(element, out)?;
            } else {
                let (text, quoted) = self.element()?;
                if !quoted && text.eq_ignore_ascii_case("NULL") {
                    out.push_str("null");
                } else {
                    element_json(&text, element, out)?;
                }
            }
            match self.peek() {
                Some(b',') => {
                    self.at += 1;
                    out.push(',');
                }
                Some(b'}') => {
                    self.at += 1;
                    out.push(']');
                    return Ok(());
                }
                _ => return Err("an array literal is cut short".into()),
            }
        }
    }

    /// One element's text (quotes and escapes removed), and whether it was quoted.
    fn element(&mut self) -> Result<(String, bool), Refusal> {
        let mut text = Vec::new();
        if self.peek() == Some(b'"') {
            self.at += 1;
            loop {
                match self.peek() {
                    Some(b'"') => {
                        self.at += 1;
                        break;
                    }
                    Some(b'\\') => {
                        text.push(*self.bytes.get(self.at + 1).ok_or("a cut escape")?);
                        self.at += 2;
                    }
                    Some(b) => {
                        text.push(b);
                        self.at += 1;
                    }
                    None => return Err("an unterminated quoted array element".into()),
                }
            }
            return String::from_utf8(text)
                .map(|t| (t, true))
                .map_err(|_| "an array element is not UTF-8".into());
        }
        while let Some(b) = self.peek() {
            match b {
                b',' | b'}' => break,
                b'\\' => {
                    text.push(*self.bytes.get(self.at + 1).ok_or("a cut escape")?);
                    self.at += 2;
                }
                _ => {
                    text.push(b);
                    self.at += 1;
                }
            }
        }
        // PostgreSQL quotes an element holding ASCII white space (`array_isspace`) and
        // trims no other: Unicode spaces at either end are the element's.
        let pg_space = |c: char| matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0b' | '\x0c');
        String::from_utf8(text)
            .map(|t| (t.trim_matches(pg_space).to_string(), false))
            .map_err(|_| "an array element is not UTF-8".into())
    }
}

/// Appends one non-NULL element's JSON.
fn element_json(text: &str, element: &LogicalType, out: &mut String) -> Result<(), Refusal> {
    match element {
        LogicalType::Bool => out.push_str(match text {
            "t" => "true",
            "f" => "false",
            _ => return Err(format!("{text:?} is not a boolean")),
        }),
        LogicalType::Int { .. } | LogicalType::Decimal { .. } | LogicalType::Float { .. } => {
            if serde_json::from_str::<serde_json::Value>(text).is_err()
                || !text.starts_with(|c: char| c == '-' || c.is_ascii_digit())
            {
                return Err(format!("array element {text:?} has no JSON number form"));
            }
            out.push_str(text);
        }
        LogicalType::Json => {
            if serde_json::from_str::<serde_json::Value>(text).is_err() {
                return Err("an array element is not JSON".into());
            }
            out.push_str(text);
        }
        _ => out.push_str(&serde_json::to_string(text).expect("a string serializes")),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrays_become_json_arrays() {
        let int = LogicalType::Int { bits: 32 };
        assert_eq!(to_json("{1,NULL,3}", &int).unwrap(), "[1,null,3]");
        assert_eq!(to_json("{{1,2},{3,4}}", &int).unwrap(), "[[1,2],[3,4]]");
        assert_eq!(to_json("{}", &int).unwrap(), "[]");
        assert_eq!(
            to_json(r#"{"a b","c\"d",NULL,"NULL",x}"#, &LogicalType::Text).unwrap(),
            r#"["a b","c\"d",null,"NULL","x"]"#
        );
        assert_eq!(
            to_json("{t,f}", &LogicalType::Bool).unwrap(),
            "[true,false]"
        );
        assert_eq!(
            to_json(r#"{"{\"a\": 1}"}"#, &LogicalType::Json).unwrap(),
            r#"[{"a": 1}]"#
        );
    }

    #[test]
    fn unquoted_elements_keep_what_postgresql_does_not_count_as_white_space() {
        assert_eq!(
            to_json("{\u{a0}a\u{85}, b }", &LogicalType::Text).unwrap(),
            "[\"\u{a0}a\u{85}\",\"b\"]"
        );
    }

    #[test]
    fn arrays_without_a_json_form_are_refused() {
        let float = LogicalType::Float { bits: 64 };
        assert!(to_json("{NaN}", &float).is_err());
        assert!(to_json("{Infinity}", &float).is_err());
        assert!(to_json("[0:1]={1,2}", &LogicalType::Int { bits: 32 }).is_err());
        assert!(to_json("{1,2", &LogicalType::Int { bits: 32 }).is_err());
    }
}
