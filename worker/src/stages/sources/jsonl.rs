//! JSON lines: one JSON object per line, its fields in the order they are written.
//!
//! Numbers become numbers; strings stay text (even `"12"`: JSON says what it is); `true` and
//! `false` become the text `true` and `false`; `null` is null; arrays and objects become their
//! JSON text. Blank lines are skipped. A row's columns are its object's keys, so rows may differ
//! (a missing field is null); the first row's keys are the table's columns unless the
//! transformation names others.

use std::fmt;
use std::sync::Arc;

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};

use crate::table::{Row, Value};
use serde_json::error::Category;

/// The longest line read, in bytes: a longer one fails the job instead of filling the memory.
pub const MAX_LINE_BYTES: usize = 1024 * 1024;

/// Decodes JSON lines into rows, sharing one column list between rows with the same keys.
#[derive(Default)]
pub struct JsonlDecoder {
    line: u64,
    columns: Option<Arc<[String]>>,
}

impl JsonlDecoder {
    /// Decodes the next line: `Ok(None)` for a blank one. Errors name the line.
    pub fn decode_line(&mut self, line: &str) -> Result<Option<Row>, String> {
        self.line += 1;
        if line.trim().is_empty() {
            return Ok(None);
        }
        // The line and serde's message (which quotes a value) are not shown: errors are shown
        // to every viewer of the job.
        let object: Object = serde_json::from_str(line).map_err(|error| {
            let problem = match error.classify() {
                Category::Data => "is not a JSON object",
                Category::Syntax => "is not valid JSON",
                Category::Eof => "ends inside a JSON value",
                Category::Io => "cannot be read",
            };
            let at = match error.column() {
                0 => String::new(),
                column => format!(" at column {column}"),
            };
            format!(
                "line {}: {problem}{at}; write one JSON object per line",
                self.line
            )
        })?;
        Ok(Some(self.row(object.0)))
    }

    /// A row from an object's fields (also a connector's rows).
    pub fn row(&mut self, fields: Vec<(String, serde_json::Value)>) -> Row {
        let same = self.columns.as_ref().is_some_and(|columns| {
            columns.len() == fields.len() && columns.iter().zip(&fields).all(|(c, (k, _))| c == k)
        });
        if !same {
            self.columns = Some(fields.iter().map(|(k, _)| k.clone()).collect());
        }
        let columns = self.columns.clone().expect("set above");
        Row {
            columns,
            values: fields.into_iter().map(|(_, v)| value(v)).collect(),
        }
    }
}

/// A JSON value as a field of a row.
pub fn value(json: serde_json::Value) -> Value {
    use serde_json::Value as Json;
    match json {
        Json::Null => Value::Null,
        Json::Number(n) => match n.as_f64() {
            Some(f) if f.is_finite() => Value::Number(f),
            _ => Value::Text(n.to_string()),
        },
        Json::String(s) => Value::Text(s),
        Json::Bool(b) => Value::Text(b.to_string()),
        nested @ (Json::Array(_) | Json::Object(_)) => Value::Text(nested.to_string()),
    }
}

/// A JSON object's fields in the order written (serde_json's map sorts them).
struct Object(Vec<(String, serde_json::Value)>);

impl<'de> Deserialize<'de> for Object {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Fields;
        impl<'de> Visitor<'de> for Fields {
            type Value = Object;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Object, A::Error> {
                let mut fields: Vec<(String, serde_json::Value)> = Vec::new();
                while let Some((key, value)) = map.next_entry::<String, serde_json::Value>()? {
                    // A repeated key: the last one wins, as in every JSON parser that keeps one.
                    if let Some(field) = fields.iter_mut().find(|(k, _)| *k == key) {
                        field.1 = value;
                    } else {
                        fields.push((key, value));
                    }
                }
                Ok(Object(fields))
            }
        }
        deserializer.deserialize_map(Fields)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_types_become_values_in_written_order() {
        let mut decoder = JsonlDecoder::default();
        let row = decoder
            .decode_line(r#"{"zone":"north","amount":12.5,"count":3,"code":"12","ok":true,"gone":null,"tags":["a",1],"at":{"x":1}}"#)
            .expect("valid")
            .expect("a row");
        assert_eq!(
            &row.columns[..],
            [
                "zone", "amount", "count", "code", "ok", "gone", "tags", "at"
            ]
        );
        assert_eq!(
            row.values,
            vec![
                Value::Text("north".into()),
                Value::Number(12.5),
                Value::Number(3.0),
                Value::Text("12".into()),
                Value::Text("true".into()),
                Value::Null,
                Value::Text(r#"["a",1]"#.into()),
                Value::Text(r#"{"x":1}"#.into()),
            ]
        );
    }

    #[test]
    fn rows_with_the_same_keys_share_their_columns() {
        let mut decoder = JsonlDecoder::default();
        let a = decoder.decode_line(r#"{"a":1,"b":2}"#).unwrap().unwrap();
        let b = decoder.decode_line(r#"{"a":3,"b":4}"#).unwrap().unwrap();
        assert!(Arc::ptr_eq(&a.columns, &b.columns));
        let c = decoder.decode_line(r#"{"b":5}"#).unwrap().unwrap();
        assert_eq!(c.get("a"), &Value::Null);
        assert_eq!(c.get("b"), &Value::Number(5.0));
        assert_eq!(decoder.decode_line("  ").unwrap(), None);
    }

    #[test]
    fn lines_that_are_not_objects_name_the_line() {
        let mut decoder = JsonlDecoder::default();
        decoder.decode_line(r#"{"a":1}"#).unwrap();
        let error = decoder.decode_line("[1,2]").expect_err("an array");
        assert_eq!(
            error,
            "line 2: is not a JSON object; write one JSON object per line"
        );
        let error = decoder.decode_line(r#"{"a":"#).expect_err("cut short");
        assert!(
            error.starts_with("line 3: ends inside a JSON value"),
            "{error}"
        );
        let error = decoder.decode_line(r#""SECRET""#).expect_err("a string");
        assert!(!error.contains("SECRET"), "a value is not echoed: {error}");
        let error = decoder
            .decode_line(r#"{"a":SECRET}"#)
            .expect_err("not JSON");
        assert!(!error.contains("SECRET"), "a value is not echoed: {error}");
    }
}
