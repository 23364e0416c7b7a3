//! A minimal reader of `.proto` schema text, as a schema registry returns it: the
//! message types (top-level and nested, in declaration order, which is what the
//! Confluent message-index path counts) and their fields' numbers, types and labels.
//! Enums, services, options, extensions and reserved ranges are skipped. It answers one
//! question: is a message field-compatible with `sales.v1.SalesEvent`?
//!
//! A registry's answer is untrusted input: nesting deeper than MAX_DEPTH and text of
//! more than MAX_TOKENS tokens are refused with a reason instead of being followed.
use std::{iter::Peekable, vec::IntoIter};

/// One message type and the messages nested in it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Message {
    pub name: String,
    pub fields: Vec<Field>,
    pub nested: Vec<Message>,
}

/// One field: `[repeated] type name = number`; maps are repeated fields of type `map`.
#[derive(Clone, Debug, PartialEq)]
pub struct Field {
    pub name: String,
    pub number: u32,
    pub ty: String,
    pub repeated: bool,
}

/// Messages (and oneofs) nested deeper than this are refused.
pub const MAX_DEPTH: usize = 32;

/// Schema text of more tokens than this is refused.
pub const MAX_TOKENS: usize = 200_000;

/// SalesEvent's fields: number, name, type.
const SALES_EVENT: [(u32, &str, &str); 5] = [
    (1, "sku", "string"),
    (2, "qty", "int32"),
    (3, "price", "double"),
    (4, "ts", "string"),
    (5, "event_id", "string"),
];

/// Parses schema text into its top-level messages.
pub fn parse(text: &str) -> Result<Vec<Message>, String> {
    let mut t = tokens(text)?.into_iter().peekable();
    let mut messages = Vec::new();
    while let Some(tok) = t.next() {
        match tok.as_str() {
            "message" => messages.push(message(&mut t, 1)?),
            "syntax" | "edition" | "package" | "import" | "option" => skip_statement(&mut t),
            "enum" | "service" | "extend" => skip_block(&mut t)?,
            ";" => {}
            other => return Err(format!("unexpected `{other}` at the top level")),
        }
    }
    Ok(messages)
}

/// The message a Confluent message-index path names.
pub fn resolve<'a>(messages: &'a [Message], path: &[u32]) -> Option<&'a Message> {
    let (first, rest) = path.split_first()?;
    let mut m = messages.get(*first as usize)?;
    for &i in rest {
        m = m.nested.get(i as usize)?;
    }
    Some(m)
}

impl Message {
    /// Whether a value of this type decodes as a SalesEvent without losing or misreading
    /// a field: every field with a SalesEvent field number has that field's type and is
    /// not repeated, and no field carries a SalesEvent field's name under another number.
    /// Other fields are skipped by the decoder, as unknown fields are.
    pub fn check_sales_event(&self) -> Result<(), String> {
        for f in &self.fields {
            let label = if f.repeated { "repeated " } else { "" };
            if let Some((n, name, ty)) = SALES_EVENT.iter().find(|(n, ..)| *n == f.number) {
                if f.repeated || f.ty != *ty {
                    return Err(format!(
                        "field {} = {n} is {label}{}, SalesEvent's field {n} ({name}) is {ty}",
                        f.name, f.ty
                    ));
                }
            } else if let Some((n, name, _)) = SALES_EVENT.iter().find(|(_, s, _)| *s == f.name) {
                return Err(format!(
                    "field {name} is number {}, SalesEvent's {name} is {n}",
                    f.number
                ));
            }
        }
        Ok(())
    }
}

type Tokens = Peekable<IntoIter<String>>;

fn message(t: &mut Tokens, depth: usize) -> Result<Message, String> {
    let name = t.next().ok_or("a message without a name")?;
    if depth > MAX_DEPTH {
        return Err(format!(
            "message {name} is nested deeper than {MAX_DEPTH} levels"
        ));
    }
    expect(t, "{")?;
    let mut m = Message {
        name,
        ..Message::default()
    };
    body(t, &mut m, depth)?;
    Ok(m)
}

/// A message's (or a oneof's) statements up to and including its closing brace.
fn body(t: &mut Tokens, m: &mut Message, depth: usize) -> Result<(), String> {
    loop {
        let tok = t
            .next()
            .ok_or_else(|| format!("message {} is not closed", m.name))?;
        match tok.as_str() {
            "}" => return Ok(()),
            ";" => {}
            "message" => m.nested.push(message(t, depth + 1)?),
            "enum" | "extend" => skip_block(t)?,
            "option" | "reserved" | "extensions" => skip_statement(t),
            "oneof" => {
                t.next().ok_or("a oneof without a name")?;
                expect(t, "{")?;
                if depth >= MAX_DEPTH {
                    return Err(format!(
                        "a oneof in {} is nested deeper than {MAX_DEPTH} levels",
                        m.name
                    ));
                }
                body(t, m, depth + 1)?;
            }
            "optional" | "required" => field(t, m, None, false)?,
            "repeated" => field(t, m, None, true)?,
            "map" if t.peek().is_some_and(|n| n == "<") => {
                while t.next().ok_or("an unclosed map type")? != ">" {}
                field(t, m, Some("map".into()), true)?
            }
            _ => field(t, m, Some(tok.clone()), false)?,
        }
    }
}

/// `type name = number [options];`, the label already read.
fn field(
    t: &mut Tokens,
    m: &mut Message,
    ty: Option<String>,
    repeated: bool,
) -> Result<(), String> {
    let ty = match ty {
        Some(ty) => ty,
        None => t.next().ok_or("a field without a type")?,
    };
    if ty == "group" {
        return Err("proto2 groups are not supported".into());
    }
    let name = t.next().ok_or("a field without a name")?;
    expect(t, "=")?;
    let number = t.next().ok_or("a field without a number")?;
    let number = number
        .parse()
        .map_err(|_| format!("field {name} has number `{number}`"))?;
    skip_statement(t);
    m.fields.push(Field {
        name,
        number,
        ty: ty.trim_start_matches('.').to_string(),
        repeated,
    });
    Ok(())
}

fn expect(t: &mut Tokens, want: &str) -> Result<(), String> {
    match t.next() {
        Some(tok) if tok == want => Ok(()),
        Some(tok) => Err(format!("expected `{want}`, found `{tok}`")),
        None => Err(format!("expected `{want}`, found the end")),
    }
}

/// Skips to the end of a statement (`;`), over bracketed options.
fn skip_statement(t: &mut Tokens) {
    let mut depth = 0usize;
    for tok in t.by_ref() {
        match tok.as_str() {
            "[" | "{" | "(" => depth += 1,
            "]" | "}" | ")" => depth = depth.saturating_sub(1),
            ";" if depth == 0 => return,
            _ => {}
        }
    }
}

/// Skips a named block: its header up to `{`, then to the matching `}`.
fn skip_block(t: &mut Tokens) -> Result<(), String> {
    while t.next().ok_or("a block without a body")? != "{" {}
    let mut depth = 1usize;
    while depth > 0 {
        match t.next().ok_or("a block is not closed")?.as_str() {
            "{" => depth += 1,
            "}" => depth -= 1,
            _ => {}
        }
    }
    Ok(())
}

/// Words, numbers and string literals as tokens, punctuation one character each;
/// comments dropped.
fn tokens(text: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if out.len() > MAX_TOKENS {
            return Err(format!("the schema has more than {MAX_TOKENS} tokens"));
        }
        match c {
            c if c.is_whitespace() => {}
            '/' if chars.peek().is_some_and(|(_, n)| *n == '/') => {
                for (_, c) in chars.by_ref() {
                    if c == '\n' {
                        break;
                    }
                }
            }
            '/' if chars.peek().is_some_and(|(_, n)| *n == '*') => {
                chars.next();
                let mut last = ' ';
                loop {
                    let (_, c) = chars.next().ok_or("an unclosed comment")?;
                    if last == '*' && c == '/' {
                        break;
                    }
                    last = c;
                }
            }
            '"' | '\'' => {
                let mut s = String::from(c);
                loop {
                    let (_, n) = chars.next().ok_or("an unclosed string")?;
                    s.push(n);
                    if n == '\\' {
                        s.extend(chars.next().map(|(_, e)| e));
                    } else if n == c {
                        break;
                    }
                }
                out.push(s);
            }
            c if c.is_alphanumeric() || matches!(c, '_' | '.' | '-' | '+') => {
                let mut end = i + c.len_utf8();
                while let Some(&(j, n)) = chars.peek() {
                    if !(n.is_alphanumeric() || matches!(n, '_' | '.')) {
                        break;
                    }
                    end = j + n.len_utf8();
                    chars.next();
                }
                out.push(text[i..end].to_string());
            }
            c => out.push(c.to_string()),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCHEMA: &str = r#"
        syntax = "proto3";
        package shop.v2; // a comment
        import "google/protobuf/timestamp.proto";
        option java_package = "com.shop";
        /* Block comment with message Fake { } inside */
        enum Channel { CHANNEL_UNSPECIFIED = 0; STORE = 1; }
        message Header { string source = 1; }
        message Sale {
          reserved 9, 10;
          option deprecated = false;
          string sku = 1 [json_name = "sku"];
          int32 qty = 2;
          double price = 3;
          optional string ts = 4;
          string event_id = 5;
          oneof origin { string store = 6; string web = 7; }
          map<string, string> tags = 8;
          message Line { int64 qty = 2; }
          enum Kind { A = 0; }
        }
    "#;

    #[test]
    fn messages_and_nesting_are_read_in_order() {
        let m = parse(SCHEMA).unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(resolve(&m, &[0]).unwrap().name, "Header");
        let sale = resolve(&m, &[1]).unwrap();
        assert_eq!(sale.fields.len(), 8);
        assert_eq!(sale.fields[5].name, "store");
        assert_eq!(sale.fields[6].name, "web");
        assert_eq!(sale.fields[7].ty, "map");
        assert_eq!(resolve(&m, &[1, 0]).unwrap().name, "Line");
        assert!(resolve(&m, &[2]).is_none());
        assert!(resolve(&m, &[1, 1]).is_none());
    }

    #[test]
    fn compatibility_with_sales_event() {
        let m = parse(SCHEMA).unwrap();
        assert_eq!(resolve(&m, &[1]).unwrap().check_sales_event(), Ok(()));
        // A message that shares no field is compatible (its fields are skipped).
        assert_eq!(resolve(&m, &[0]).unwrap().check_sales_event(), Ok(()));
        let err = resolve(&m, &[1, 0])
            .unwrap()
            .check_sales_event()
            .unwrap_err();
        assert!(err.contains("int64") && err.contains("int32"), "{err}");
        let moved = parse("message M { string sku = 7; }").unwrap();
        assert!(moved[0]
            .check_sales_event()
            .unwrap_err()
            .contains("number 7"));
        let repeated = parse("message M { repeated string sku = 1; }").unwrap();
        assert!(repeated[0]
            .check_sales_event()
            .unwrap_err()
            .contains("repeated"));
    }

    #[test]
    fn broken_text_is_an_error() {
        assert!(parse("message M { string sku = 1;").is_err());
        assert!(parse("message M { string sku = one; }").is_err());
        assert!(parse("garbage").is_err());
        assert!(parse("message M { group G = 1 {} }").is_err());
        assert!(parse("/* open").is_err());
    }

    #[test]
    fn deep_nesting_and_huge_text_are_refused_with_a_reason() {
        let deep = |n: usize| "message M { ".repeat(n) + &"}".repeat(n);
        assert!(parse(&deep(MAX_DEPTH)).is_ok());
        let err = parse(&deep(40_000)).unwrap_err();
        assert!(err.contains("nested deeper than 32"), "{err}");
        let oneofs = format!(
            "message M {{ {} }}",
            "oneof o { ".repeat(100) + &"}".repeat(100)
        );
        assert!(parse(&oneofs).unwrap_err().contains("deeper"));
        let huge = "message M { } ".repeat(MAX_TOKENS / 4 + 1);
        assert!(parse(&huge).unwrap_err().contains("tokens"));
    }
}
