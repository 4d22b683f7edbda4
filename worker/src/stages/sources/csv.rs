//! CSV (RFC 4180: quoted fields, doubled quotes, commas and line breaks inside quotes) decoded
//! from byte chunks as they arrive, with `csv-core`: no line is assumed to fit a chunk, and
//! nothing but the record being decoded is held.
//!
//! The first record is the header; it names the columns. Every later record must have as many
//! fields. Fields become [`Value::parse`]: numbers when they read as one, empty is null, else
//! text. Blank lines are skipped; a UTF-8 byte-order mark before the header is dropped.
//!
//! A record holds at most [`MAX_RECORD_BYTES`] of field text and [`MAX_FIELDS`] fields: a
//! longer one (a file without line breaks, `/dev/zero`) fails the job instead of filling the
//! worker's memory.

use std::sync::Arc;

use csv_core::{ReadRecordResult, Reader};

use crate::table::{Row, Value};

/// The most field text one record may hold, in bytes.
pub const MAX_RECORD_BYTES: usize = 1024 * 1024;
/// The most fields one record may have.
pub const MAX_FIELDS: usize = 4096;

/// Decodes CSV records from chunks of bytes into rows.
pub struct CsvDecoder {
    reader: Reader,
    /// The fields of the record being decoded, unescaped, back to back.
    fields: Vec<u8>,
    fields_len: usize,
    /// Where each field of the record ends in `fields`.
    ends: Vec<usize>,
    ends_len: usize,
    columns: Option<Arc<[String]>>,
    /// The line the record being decoded started on (1-based).
    record_line: u64,
    /// Records completed so far (the header is the first).
    records: u64,
    done: bool,
}

impl Default for CsvDecoder {
    fn default() -> Self {
        CsvDecoder {
            reader: Reader::new(),
            fields: vec![0; 1024],
            fields_len: 0,
            ends: vec![0; 64],
            ends_len: 0,
            columns: None,
            record_line: 1,
            records: 0,
            done: false,
        }
    }
}

impl CsvDecoder {
    /// Decodes `chunk`, the next bytes of the input, and returns the rows it completed. An
    /// empty chunk means the input ended: the last record is completed even without a line
    /// break. Errors name the line and say what is wrong.
    pub fn decode(&mut self, mut chunk: &[u8]) -> Result<Vec<Row>, String> {
        let at_end = chunk.is_empty();
        let mut rows = Vec::new();
        while !self.done {
            // csv-core takes an empty input for the end of the input.
            if chunk.is_empty() && !at_end {
                break;
            }
            let (result, read, written, ended) = self.reader.read_record(
                chunk,
                &mut self.fields[self.fields_len..],
                &mut self.ends[self.ends_len..],
            );
            chunk = &chunk[read..];
            self.fields_len += written;
            self.ends_len += ended;
            match result {
                ReadRecordResult::InputEmpty => {}
                ReadRecordResult::OutputFull => {
                    let len = self.fields.len();
                    if len >= MAX_RECORD_BYTES {
                        return Err(self.too_long(format!(
                            "is longer than the {} MiB limit",
                            MAX_RECORD_BYTES / (1024 * 1024)
                        )));
                    }
                    self.fields.resize((len * 2).min(MAX_RECORD_BYTES), 0);
                }
                ReadRecordResult::OutputEndsFull => {
                    let len = self.ends.len();
                    if len >= MAX_FIELDS {
                        return Err(
                            self.too_long(format!("has more than the {MAX_FIELDS} fields allowed"))
                        );
                    }
                    self.ends.resize((len * 2).min(MAX_FIELDS), 0);
                }
                ReadRecordResult::Record => {
                    self.records += 1;
                    if let Some(row) = self.record()? {
                        rows.push(row);
                    }
                    self.fields_len = 0;
                    self.ends_len = 0;
                    // The reader counts line breaks it consumed, so the next record starts on
                    // the line after the last one this record took.
                    self.record_line = self.reader.line();
                }
                ReadRecordResult::End => self.done = true,
            }
        }
        Ok(rows)
    }

    /// The error for a record over a limit: which record, and what to do.
    fn too_long(&self, what: String) -> String {
        format!(
            "record {} (from line {}) {what}; check that the input is CSV with a line break after each record, and that its quotes are closed",
            self.records + 1,
            self.record_line
        )
    }

    /// The column names, once the header was read.
    pub fn columns(&self) -> Option<&[String]> {
        self.columns.as_deref()
    }

    /// The record just decoded: the header (`None`) or a row.
    fn record(&mut self) -> Result<Option<Row>, String> {
        let line = self.record_line;
        let ends = &self.ends[..self.ends_len];
        let mut start = 0;
        let mut fields = Vec::with_capacity(ends.len());
        for (index, &end) in ends.iter().enumerate() {
            let bytes = &self.fields[start..end];
            start = end;
            let text = std::str::from_utf8(bytes).map_err(|_| {
                let column = self
                    .columns
                    .as_ref()
                    .and_then(|c| c.get(index))
                    .map_or_else(
                        || format!("field {}", index + 1),
                        |c| format!("column `{c}`"),
                    );
                format!("line {line}, {column}: the text is not UTF-8; save the file as UTF-8")
            })?;
            fields.push(text);
        }
        let Some(columns) = &self.columns else {
            if let Some(first) = fields.first_mut() {
                *first = first.strip_prefix('\u{feff}').unwrap_or(first);
            }
            for (index, name) in fields.iter().enumerate() {
                if fields[..index].contains(name) {
                    return Err(format!(
                        "line {line}: the header names the column `{name}` twice; give each column its own name"
                    ));
                }
            }
            self.columns = Some(fields.iter().map(|f| f.trim().to_string()).collect());
            return Ok(None);
        };
        if fields.len() != columns.len() {
            return Err(format!(
                "line {line} has {} field(s) but the header names {} column(s); quote fields that contain commas (\"a, b\") and give every line the same number of fields",
                fields.len(),
                columns.len()
            ));
        }
        Ok(Some(Row {
            columns: columns.clone(),
            values: fields.into_iter().map(Value::parse).collect(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `input` fed in chunks of `chunk` bytes.
    fn decode_in_chunks(
        input: &[u8],
        chunk: usize,
    ) -> Result<(Vec<String>, Vec<Vec<Value>>), String> {
        let mut decoder = CsvDecoder::default();
        let mut rows = Vec::new();
        for piece in input.chunks(chunk.max(1)) {
            rows.extend(decoder.decode(piece)?);
        }
        rows.extend(decoder.decode(&[])?);
        let columns = decoder
            .columns()
            .map(<[String]>::to_vec)
            .unwrap_or_default();
        Ok((columns, rows.into_iter().map(|r| r.values).collect()))
    }

    fn text(s: &str) -> Value {
        Value::Text(s.into())
    }

    #[test]
    fn quoting_follows_rfc_4180() {
        let input = "\u{feff}name,note,amount\r\n\"Smith, Ann\",\"said \"\"hi\"\"\",12.5\r\n\"two\nlines\",,-3\r\nplain,x,abc";
        let (columns, rows) = decode_in_chunks(input.as_bytes(), 4096).expect("valid CSV");
        assert_eq!(columns, ["name", "note", "amount"]);
        assert_eq!(
            rows,
            vec![
                vec![text("Smith, Ann"), text("said \"hi\""), Value::Number(12.5)],
                vec![text("two\nlines"), Value::Null, Value::Number(-3.0)],
                vec![text("plain"), text("x"), text("abc")],
            ]
        );
    }

    #[test]
    fn any_chunking_gives_the_same_rows() {
        let mut input = String::from("region,product,amount\n");
        for i in 0..200 {
            input.push_str(&format!(
                "\"r{}, west\",\"p \"\"{i}\"\"\",{}.25\n\n",
                i % 7,
                i * 3
            ));
        }
        let whole = decode_in_chunks(input.as_bytes(), input.len()).expect("valid");
        assert_eq!(whole.1.len(), 200);
        for chunk in [1, 2, 3, 7, 64, 1000] {
            assert_eq!(
                decode_in_chunks(input.as_bytes(), chunk).expect("valid"),
                whole,
                "chunks of {chunk}"
            );
        }
    }

    #[test]
    fn long_fields_and_many_columns_grow_the_buffers() {
        let long = "x".repeat(3_000);
        let header: Vec<String> = (0..300).map(|i| format!("c{i}")).collect();
        let values: Vec<&str> = (0..300).map(|_| long.as_str()).collect();
        let input = format!("{}\n{}\n", header.join(","), values.join(","));
        let (columns, rows) = decode_in_chunks(input.as_bytes(), 333).expect("valid");
        assert_eq!(columns.len(), 300);
        assert_eq!(rows[0].len(), 300);
        assert_eq!(rows[0][299], text(&long));
    }

    #[test]
    fn errors_name_the_line_and_what_to_do() {
        let error = decode_in_chunks(b"a,b\n1,2\n\"x\ny\",2,3\n", 5).expect_err("3 fields");
        assert_eq!(
            error,
            "line 3 has 3 field(s) but the header names 2 column(s); quote fields that contain commas (\"a, b\") and give every line the same number of fields"
        );
        let error = decode_in_chunks(b"a,b\n1,\xff\n", 64).expect_err("not UTF-8");
        assert_eq!(
            error,
            "line 2, column `b`: the text is not UTF-8; save the file as UTF-8"
        );
        let error = decode_in_chunks(b"a,a\n", 64).expect_err("twice");
        assert!(error.contains("names the column `a` twice"), "{error}");
    }

    #[test]
    fn a_record_over_the_limits_fails_naming_it() {
        let mut input = b"a,b\n1,2\n".to_vec();
        input.extend(std::iter::repeat_n(0u8, MAX_RECORD_BYTES + 1));
        let error = decode_in_chunks(&input, 64 * 1024).expect_err("too long");
        assert_eq!(
            error,
            "record 3 (from line 3) is longer than the 1 MiB limit; check that the input is CSV with a line break after each record, and that its quotes are closed"
        );
        let input = format!("a\n\"{}", "x".repeat(2 * MAX_RECORD_BYTES));
        let error = decode_in_chunks(input.as_bytes(), 4096).expect_err("unclosed quote");
        assert!(
            error.starts_with("record 2 (from line 2) is longer"),
            "{error}"
        );
        let input = format!("a\n{}\n", ",".repeat(MAX_FIELDS));
        let error = decode_in_chunks(input.as_bytes(), 4096).expect_err("too many fields");
        assert!(
            error.contains(&format!("has more than the {MAX_FIELDS} fields allowed")),
            "{error}"
        );
    }

    #[test]
    fn an_empty_input_has_no_header() {
        let (columns, rows) = decode_in_chunks(b"\n\n", 1).expect("nothing to decode");
        assert!(columns.is_empty() && rows.is_empty());
    }
}
