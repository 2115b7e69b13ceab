//! `labelSelector` and `fieldSelector`: the grammar, the matching rules and the error messages of
//! the real API server (reference `kube-api-semantics.md` §6.4). Watches use [`Selector::matches`]
//! on the old and new object to turn changes into `ADDED`/`DELETED` at the selector's edge (§7.4 E3).

use std::fmt;

use serde_json::Value;

use crate::resources::ResourceDef;
use crate::status::ApiError;

/// A parsed `labelSelector` and `fieldSelector`. An object matches when it meets every
/// requirement of both; with no requirements every object matches.
///
/// `Display` renders the canonical form: the label requirements, then `; ` and the field
/// requirements when there are any (for logs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selector {
    labels: Vec<LabelRequirement>,
    fields: Vec<FieldRequirement>,
}

impl Selector {
    /// Parses the `labelSelector` and `fieldSelector` query values for `resource`. Errors are
    /// 400 `BadRequest` with the API server's messages (`unable to parse requirement: ...`,
    /// `field label not supported: foo`).
    pub fn parse(label: Option<&str>, field: Option<&str>, resource: &ResourceDef) -> Result<Selector, ApiError> {
        let labels = parse_labels(label.unwrap_or("")).map_err(ApiError::bad_request)?;
        let fields = parse_fields(field.unwrap_or(""), resource).map_err(ApiError::bad_request)?;
        Ok(Selector { labels, fields })
    }

    /// Whether `object` (a whole API object as JSON) meets every requirement.
    pub fn matches(&self, object: &Value) -> bool {
        let labels = object.pointer("/metadata/labels");
        self.labels.iter().all(|r| r.matches(labels)) && self.fields.iter().all(|r| r.matches(object))
    }

    /// Whether there are no requirements, so that every object matches.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty() && self.fields.is_empty()
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_joined(f, &self.labels)?;
        if !self.fields.is_empty() {
            f.write_str("; ")?;
            write_joined(f, &self.fields)?;
        }
        Ok(())
    }
}

/// A value set as it reads back: `{""}` joins to nothing, which would read as the empty set
/// the parser refuses, so it is written `,` (the empty value, as `(,)` parses).
fn value_set(values: &[String]) -> String {
    let joined = values.join(",");
    if joined.is_empty() && !values.is_empty() { ",".to_owned() } else { joined }
}

fn write_joined(f: &mut fmt::Formatter<'_>, items: &[impl fmt::Display]) -> fmt::Result {
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            f.write_str(",")?;
        }
        write!(f, "{item}")?;
    }
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct LabelRequirement {
    key: String,
    op: LabelOp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum LabelOp {
    Equals(String),
    NotEquals(String),
    /// Values sorted and deduplicated: the server treats them as a set.
    In(Vec<String>),
    NotIn(Vec<String>),
    Exists,
    DoesNotExist,
}

impl LabelRequirement {
    fn matches(&self, labels: Option<&Value>) -> bool {
        let value = labels.and_then(|l| l.get(&self.key)).and_then(Value::as_str);
        match &self.op {
            LabelOp::Equals(v) => value == Some(v.as_str()),
            // Kubernetes semantics: an object without the label matches `!=` and `notin`.
            LabelOp::NotEquals(v) => value != Some(v.as_str()),
            LabelOp::In(vs) => value.is_some_and(|value| vs.iter().any(|v| v == value)),
            LabelOp::NotIn(vs) => !value.is_some_and(|value| vs.iter().any(|v| v == value)),
            LabelOp::Exists => value.is_some(),
            LabelOp::DoesNotExist => value.is_none(),
        }
    }
}

impl fmt::Display for LabelRequirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let key = &self.key;
        match &self.op {
            LabelOp::Equals(v) => write!(f, "{key}={v}"),
            LabelOp::NotEquals(v) => write!(f, "{key}!={v}"),
            LabelOp::In(vs) => write!(f, "{key} in ({})", value_set(vs)),
            LabelOp::NotIn(vs) => write!(f, "{key} notin ({})", value_set(vs)),
            LabelOp::Exists => write!(f, "{key}"),
            LabelOp::DoesNotExist => write!(f, "!{key}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct FieldRequirement {
    /// Dotted path into the object, e.g. `status.phase`.
    path: String,
    value: String,
    equal: bool,
}

impl FieldRequirement {
    fn matches(&self, object: &Value) -> bool {
        (field_value(object, &self.path) == self.value) == self.equal
    }
}

impl fmt::Display for FieldRequirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = if self.equal { "=" } else { "!=" };
        write!(f, "{}{op}{}", self.path, self.value)
    }
}

/// The value of a field label as a field selector compares it: the field at the label's dotted
/// path (`source` is the event's `source.component`), scalars as text, anything missing (or not
/// a scalar) as the empty string, or as `false` for a boolean label, as the server's field sets
/// render them.
fn field_value(object: &Value, label: &str) -> String {
    let path = match label {
        "source" => "source.component",
        other => other,
    };
    let found = path.split('.').try_fold(object, |value, segment| value.get(segment));
    match found {
        Some(Value::String(s)) => s.clone(),
        Some(value @ (Value::Bool(_) | Value::Number(_))) => value.to_string(),
        _ if matches!(label, "spec.hostNetwork" | "spec.unschedulable") => "false".to_owned(),
        _ => String::new(),
    }
}

// ---- label selector grammar ----------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token<'a> {
    Ident(&'a str),
    Bang,
    Equals,
    DoubleEquals,
    NotEquals,
    Open,
    Close,
    Comma,
    End,
}

impl fmt::Display for Token<'_> {
    /// The literal, as the server quotes it in `found '...'` messages (end of input is empty).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Token::Ident(s) => s,
            Token::Bang => "!",
            Token::Equals => "=",
            Token::DoubleEquals => "==",
            Token::NotEquals => "!=",
            Token::Open => "(",
            Token::Close => ")",
            Token::Comma => ",",
            Token::End => "",
        })
    }
}

/// Characters that end an identifier; everything else up to whitespace belongs to it, so bad
/// keys and values reach validation and get its precise message.
fn is_special(c: char) -> bool {
    matches!(c, '!' | '=' | '(' | ')' | ',')
}

fn lex(input: &str) -> Vec<Token<'_>> {
    let mut tokens = Vec::new();
    let mut rest = input.trim_start();
    while let Some(c) = rest.chars().next() {
        let (token, len) = match c {
            '(' => (Token::Open, 1),
            ')' => (Token::Close, 1),
            ',' => (Token::Comma, 1),
            '!' if rest.starts_with("!=") => (Token::NotEquals, 2),
            '!' => (Token::Bang, 1),
            '=' if rest.starts_with("==") => (Token::DoubleEquals, 2),
            '=' => (Token::Equals, 1),
            _ => {
                let len = rest.find(|c: char| c.is_whitespace() || is_special(c)).unwrap_or(rest.len());
                (Token::Ident(&rest[..len]), len)
            }
        };
        tokens.push(token);
        rest = rest[len..].trim_start();
    }
    tokens.push(Token::End);
    tokens
}

struct LabelParser<'a> {
    tokens: Vec<Token<'a>>,
    pos: usize,
}

impl<'a> LabelParser<'a> {
    fn peek(&self) -> Token<'a> {
        // The lexer always ends with `End`; past it, keep answering `End`.
        self.tokens.get(self.pos).copied().unwrap_or(Token::End)
    }

    fn next(&mut self) -> Token<'a> {
        let token = self.peek();
        self.pos += 1;
        token
    }

    fn selector(&mut self) -> Result<Vec<LabelRequirement>, String> {
        let mut requirements = Vec::new();
        if self.peek() == Token::End {
            return Ok(requirements);
        }
        loop {
            match self.peek() {
                Token::Ident(_) | Token::Bang => {
                    let requirement = self.requirement().map_err(|e| format!("unable to parse requirement: {e}"))?;
                    requirements.push(requirement);
                }
                other => return Err(format!("found '{other}', expected: !, identifier, or 'end of string'")),
            }
            match self.next() {
                Token::End => return Ok(requirements),
                Token::Comma if self.peek() == Token::End => {
                    return Err("found '', expected: identifier after ','".to_owned());
                }
                Token::Comma => {}
                other => return Err(format!("found '{other}', expected: ',' or 'end of string'")),
            }
        }
    }

    fn requirement(&mut self) -> Result<LabelRequirement, String> {
        if self.peek() == Token::Bang {
            self.next();
            let key = self.key()?;
            return Ok(LabelRequirement { key, op: LabelOp::DoesNotExist });
        }
        let key = self.key()?;
        let op = match self.peek() {
            Token::Comma | Token::End => LabelOp::Exists,
            Token::Equals | Token::DoubleEquals => {
                self.next();
                LabelOp::Equals(self.exact_value()?)
            }
            Token::NotEquals => {
                self.next();
                LabelOp::NotEquals(self.exact_value()?)
            }
            // `in`/`notin` are keywords only where an operator may stand, so they stay usable
            // as values.
            Token::Ident("in") => {
                self.next();
                LabelOp::In(self.value_set()?)
            }
            Token::Ident("notin") => {
                self.next();
                LabelOp::NotIn(self.value_set()?)
            }
            other => return Err(format!("found '{other}', expected: in, notin, =, ==, !=, gt, lt")),
        };
        Ok(LabelRequirement { key, op })
    }

    fn key(&mut self) -> Result<String, String> {
        match self.next() {
            Token::Ident(key) => {
                validate_key(key)?;
                Ok(key.to_owned())
            }
            other => Err(format!("found '{other}', expected: identifier")),
        }
    }

    /// The value after `=`, `==` or `!=`; nothing before a comma or the end is the empty value.
    fn exact_value(&mut self) -> Result<String, String> {
        let value = match self.peek() {
            Token::Comma | Token::End => "",
            Token::Ident(value) => {
                self.next();
                value
            }
            other => return Err(format!("found '{other}', expected: identifier")),
        };
        validate_value(0, value)?;
        Ok(value.to_owned())
    }

    /// `( v1, v2, ... )`. An element left out between commas is the empty value.
    fn value_set(&mut self) -> Result<Vec<String>, String> {
        match self.next() {
            Token::Open => {}
            other => return Err(format!("found '{other}', expected: '('")),
        }
        let mut values = Vec::new();
        if self.peek() == Token::Close {
            self.next();
            return Err("for 'in', 'notin' operators, values set can't be empty".to_owned());
        }
        loop {
            match self.next() {
                Token::Ident(value) => {
                    values.push(value);
                    match self.next() {
                        Token::Comma => {}
                        Token::Close => break,
                        other => return Err(format!("found '{other}', expected: ',' or ')'")),
                    }
                }
                Token::Comma => values.push(""),
                // Only reachable right after a comma: `(a,)` holds `a` and the empty value.
                Token::Close => {
                    values.push("");
                    break;
                }
                other => return Err(format!("found '{other}', expected: identifier, ',' or ')'")),
            }
        }
        for (i, value) in values.iter().enumerate() {
            validate_value(i, value)?;
        }
        let mut values: Vec<String> = values.into_iter().map(str::to_owned).collect();
        values.sort();
        values.dedup();
        Ok(values)
    }
}

fn parse_labels(input: &str) -> Result<Vec<LabelRequirement>, String> {
    LabelParser { tokens: lex(input), pos: 0 }.selector()
}

const NAME_RULE: &str =
    "consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";

/// A label key: an optional DNS subdomain prefix and `/`, then a name of at most 63 characters.
fn validate_key(key: &str) -> Result<(), String> {
    let invalid = |message: String| format!("key: Invalid value: {key:?}: {message}");
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if name.contains('/') {
        return Err(invalid(format!(
            "a qualified name must {NAME_RULE} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
        )));
    }
    if let Some(prefix) = prefix {
        if prefix.is_empty() {
            return Err(invalid("prefix part must be non-empty".to_owned()));
        }
        if prefix.len() > 253 {
            return Err(invalid("prefix part must be no more than 253 characters".to_owned()));
        }
        if !is_dns_subdomain(prefix) {
            return Err(invalid(
                "prefix part a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character".to_owned(),
            ));
        }
    }
    if name.is_empty() {
        return Err(invalid("name part must be non-empty".to_owned()));
    }
    if name.len() > 63 {
        return Err(invalid("name part must be no more than 63 characters".to_owned()));
    }
    if !is_label_name(name) {
        return Err(invalid(format!("name part must {NAME_RULE}")));
    }
    Ok(())
}

/// A label value: empty, or a name of at most 63 characters.
fn validate_value(index: usize, value: &str) -> Result<(), String> {
    let invalid = |message: String| format!("values[{index}]: Invalid value: {value:?}: {message}");
    if value.len() > 63 {
        return Err(invalid("must be no more than 63 characters".to_owned()));
    }
    if !value.is_empty() && !is_label_name(value) {
        return Err(invalid(format!("a valid label must be an empty string or {NAME_RULE}")));
    }
    Ok(())
}

fn is_label_name(s: &str) -> bool {
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    alnum(s.chars().next())
        && alnum(s.chars().last())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn is_dns_subdomain(s: &str) -> bool {
    s.split('.').all(|part| {
        let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        alnum(part.chars().next())
            && alnum(part.chars().last())
            && part.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    })
}

// ---- field selector grammar ----------------------------------------------------------------

/// `path=value`, `path==value` or `path!=value` terms joined by commas. A backslash escapes the
/// next character (`\,`, `\=`, `\\`), as in the server's field selector syntax.
fn parse_fields(input: &str, resource: &ResourceDef) -> Result<Vec<FieldRequirement>, String> {
    let mut requirements = Vec::new();
    for term in split_unescaped(input) {
        let term = term.trim();
        if term.is_empty() {
            continue;
        }
        let Some((path, equal, value)) = split_operator(term) else {
            return Err(format!("invalid selector: '{term}'; can't understand '{term}'"));
        };
        let path = unescape(path.trim()).ok_or_else(|| format!("invalid selector: '{term}': invalid escape sequence"))?;
        let value = unescape(value.trim()).ok_or_else(|| format!("invalid selector: '{term}': invalid escape sequence"))?;
        let supported = matches!(path.as_str(), "metadata.name" | "metadata.namespace")
            || resource.field_labels.contains(&path.as_str());
        if !supported {
            return Err(format!("field label not supported: {path}"));
        }
        requirements.push(FieldRequirement { path, value, equal });
    }
    Ok(requirements)
}

/// Splits at commas that no backslash escapes.
fn split_unescaped(input: &str) -> Vec<&str> {
    let mut terms = Vec::new();
    let mut start = 0;
    let mut escaped = false;
    for (i, c) in input.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            ',' => {
                terms.push(&input[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    terms.push(&input[start..]);
    terms
}

/// The leftmost unescaped operator: `(path, is_equality, value)`.
fn split_operator(term: &str) -> Option<(&str, bool, &str)> {
    let mut escaped = false;
    for (i, c) in term.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        let rest = &term[i..];
        if c == '\\' {
            escaped = true;
        } else if let Some(value) = rest.strip_prefix("!=") {
            return Some((&term[..i], false, value));
        } else if let Some(value) = rest.strip_prefix("==") {
            return Some((&term[..i], true, value));
        } else if c == '=' {
            return Some((&term[..i], true, &rest[1..]));
        }
    }
    None
}

/// Removes escaping backslashes; `None` for a dangling backslash at the end.
fn unescape(s: &str) -> Option<String> {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        out.push(if c == '\\' { chars.next()? } else { c });
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::resources::{CONFIGMAPS, NAMESPACES, PODS};

    /// Parses `label` and `field` for pods; `expected` is the canonical form, or `error: ` and
    /// the message.
    #[track_caller]
    fn check(label: &str, field: &str, expected: &str) {
        check_for(&PODS, label, field, expected);
    }

    #[track_caller]
    fn check_for(resource: &ResourceDef, label: &str, field: &str, expected: &str) {
        let actual = match Selector::parse(Some(label), Some(field), resource) {
            Ok(selector) => selector.to_string(),
            Err(error) => {
                assert_eq!(error.code, 400, "{error}");
                assert_eq!(error.reason, "BadRequest");
                format!("error: {}", error.message)
            }
        };
        assert_eq!(actual, expected, "labelSelector={label:?} fieldSelector={field:?}");
    }

    #[test]
    fn parses_label_selectors() {
        check("", "", "");
        check("   ", "", "");
        check("app=web", "", "app=web");
        check("app==web", "", "app=web");
        check("app!=web", "", "app!=web");
        check(" app = web , tier != db ", "", "app=web,tier!=db");
        check("app=", "", "app=");
        check("app=,tier", "", "app=,tier");
        check("app in (b, a,a)", "", "app in (a,b)");
        check("app in(a)", "", "app in (a)");
        check("app notin (a,b)", "", "app notin (a,b)");
        check("app in (a,)", "", "app in (,a)");
        check("app", "", "app");
        check("!app", "", "!app");
        check("! app", "", "!app");
        check("app,!canary,tier in (web)", "", "app,!canary,tier in (web)");
        check("app in (in,notin)", "", "app in (in,notin)");
        check("example.com/app=x", "", "example.com/app=x");
        check("app.kubernetes.io/name=web_1.2-b", "", "app.kubernetes.io/name=web_1.2-b");
        check(&format!("{}=v", "k".repeat(63)), "", &format!("{}=v", "k".repeat(63)));
    }

    #[test]
    fn rejects_bad_label_selectors() {
        check("a in (b", "", "error: unable to parse requirement: found '', expected: ',' or ')'");
        check("=x", "", "error: found '=', expected: !, identifier, or 'end of string'");
        check("!", "", "error: unable to parse requirement: found '', expected: identifier");
        check("a!", "", "error: unable to parse requirement: found '!', expected: in, notin, =, ==, !=, gt, lt");
        check("a b", "", "error: unable to parse requirement: found 'b', expected: in, notin, =, ==, !=, gt, lt");
        check("a=b c", "", "error: found 'c', expected: ',' or 'end of string'");
        check("a=b,", "", "error: found '', expected: identifier after ','");
        check(",a", "", "error: found ',', expected: !, identifier, or 'end of string'");
        check("a in b", "", "error: unable to parse requirement: found 'b', expected: '('");
        check("a in ()", "", "error: unable to parse requirement: for 'in', 'notin' operators, values set can't be empty");
        check("a in (b c)", "", "error: unable to parse requirement: found 'c', expected: ',' or ')'");
        check("a in (=)", "", "error: unable to parse requirement: found '=', expected: identifier, ',' or ')'");
        check("a==(", "", "error: unable to parse requirement: found '(', expected: identifier");
        check("!a=b", "", "error: found '=', expected: ',' or 'end of string'");
        check("a)", "", "error: unable to parse requirement: found ')', expected: in, notin, =, ==, !=, gt, lt");
        check(
            "-a=b",
            "",
            "error: unable to parse requirement: key: Invalid value: \"-a\": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character",
        );
        check(
            "a/b/c",
            "",
            "error: unable to parse requirement: key: Invalid value: \"a/b/c\": a qualified name must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')",
        );
        check("/a", "", "error: unable to parse requirement: key: Invalid value: \"/a\": prefix part must be non-empty");
        check("a/", "", "error: unable to parse requirement: key: Invalid value: \"a/\": name part must be non-empty");
        check(
            "Example.com/a",
            "",
            "error: unable to parse requirement: key: Invalid value: \"Example.com/a\": prefix part a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character",
        );
        check(
            &format!("{}=v", "k".repeat(64)),
            "",
            &format!("error: unable to parse requirement: key: Invalid value: \"{}\": name part must be no more than 63 characters", "k".repeat(64)),
        );
        check(
            "a=b@",
            "",
            "error: unable to parse requirement: values[0]: Invalid value: \"b@\": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character",
        );
        check(
            "a in (b,c-)",
            "",
            "error: unable to parse requirement: values[1]: Invalid value: \"c-\": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character",
        );
        check(
            &format!("a={}", "v".repeat(64)),
            "",
            &format!("error: unable to parse requirement: values[0]: Invalid value: \"{}\": must be no more than 63 characters", "v".repeat(64)),
        );
    }

    #[test]
    fn parses_field_selectors() {
        check("", "metadata.name=web-1", "; metadata.name=web-1");
        check("", "metadata.name==web-1", "; metadata.name=web-1");
        check("", " metadata.namespace != demo , status.phase=Running", "; metadata.namespace!=demo,status.phase=Running");
        check("", "spec.nodeName=", "; spec.nodeName=");
        check("", "metadata.name=a\\,b\\=c", "; metadata.name=a,b=c");
        check("", "metadata.name=a,", "; metadata.name=a");
        check("app", "metadata.name=x", "app; metadata.name=x");
        check_for(&CONFIGMAPS, "", "metadata.namespace=demo", "; metadata.namespace=demo");
        check_for(&NAMESPACES, "", "status.phase=Active", "; status.phase=Active");
    }

    #[test]
    fn rejects_bad_field_selectors() {
        check("", "foo=bar", "error: field label not supported: foo");
        check("", "=x", "error: field label not supported: ");
        check_for(&CONFIGMAPS, "", "status.phase=Running", "error: field label not supported: status.phase");
        check("", "metadata.name", "error: invalid selector: 'metadata.name'; can't understand 'metadata.name'");
        check("", "metadata.name\\=x", "error: invalid selector: 'metadata.name\\=x'; can't understand 'metadata.name\\=x'");
        check("", "metadata.name=x\\", "error: invalid selector: 'metadata.name=x\\': invalid escape sequence");
        // The label selector is checked first, as the server converts it first.
        check("a in (", "foo=bar", "error: unable to parse requirement: found '', expected: identifier, ',' or ')'");
    }

    #[test]
    fn never_panics_on_odd_input() {
        let odd = ["(", ")", "!", "!=", "==", "=", ",", "in", "notin", "a in", "a notin (", "é=ü", "a=\u{0}", "\\", "\t!\n", "a in ((b))", "!!a"];
        for label in odd {
            for field in odd {
                let _ = Selector::parse(Some(label), Some(field), &PODS);
            }
        }
    }

    /// Whether an object with these labels and fields matches `label`/`field` on pods.
    #[track_caller]
    fn check_match(label: &str, field: &str, object: &Value, expected: bool) {
        let selector = Selector::parse(Some(label), Some(field), &PODS).unwrap();
        assert_eq!(selector.matches(object), expected, "labelSelector={label:?} fieldSelector={field:?} on {object}");
    }

    #[test]
    fn matches_labels_with_kubernetes_semantics() {
        let web = json!({"metadata": {"name": "web-1", "labels": {"app": "web", "tier": "front", "empty": ""}}});
        let bare = json!({"metadata": {"name": "bare"}});
        let table: &[(&str, &Value, bool)] = &[
            ("", &bare, true),
            ("app=web", &web, true),
            ("app==web", &web, true),
            ("app=db", &web, false),
            ("app=web", &bare, false),
            ("app!=db", &web, true),
            ("app!=web", &web, false),
            ("app!=web", &bare, true),
            ("app in (db,web)", &web, true),
            ("app in (db)", &web, false),
            ("app in (web)", &bare, false),
            ("app notin (db)", &web, true),
            ("app notin (web)", &web, false),
            ("app notin (web)", &bare, true),
            ("app", &web, true),
            ("app", &bare, false),
            ("!app", &web, false),
            ("!app", &bare, true),
            ("empty", &web, true),
            ("empty=", &web, true),
            ("missing=", &web, false),
            ("app=web,tier=front", &web, true),
            ("app=web,tier=back", &web, false),
            ("app=web,!canary", &web, true),
        ];
        for (label, object, expected) in table {
            check_match(label, "", object, *expected);
        }
    }

    #[test]
    fn matches_fields_by_dotted_path() {
        let pod = json!({
            "metadata": {"name": "web-1", "namespace": "demo"},
            "spec": {"nodeName": "node-1", "hostNetwork": false},
            "status": {"phase": "Running"}
        });
        let table: &[(&str, bool)] = &[
            ("metadata.name=web-1", true),
            ("metadata.name=web-2", false),
            ("metadata.name!=web-2", true),
            ("metadata.namespace=demo,status.phase=Running", true),
            ("metadata.namespace=demo,status.phase!=Running", false),
            ("spec.nodeName==node-1", true),
            ("status.podIP=", true),
            ("status.podIP!=", false),
            ("spec.restartPolicy!=Always", true),
            ("spec.hostNetwork=false", true),
            ("spec.schedulerName=", true),
            ("status.nominatedNodeName=", true),
        ];
        for (field, expected) in table {
            check_match("", field, &pod, *expected);
        }
        let event = json!({"involvedObject": {"kind": "Pod", "name": "web-1", "namespace": "demo", "uid": "u1", "apiVersion": "v1", "fieldPath": "spec.containers{c}"},
                           "reason": "BackOff", "type": "Warning", "source": {"component": "kubelet", "host": "sim-node-1"}});
        for (field, expected) in [
            ("involvedObject.kind=Pod,involvedObject.apiVersion=v1,involvedObject.name=web-1", true),
            ("involvedObject.uid=u1,involvedObject.namespace=demo,involvedObject.fieldPath=spec.containers{c}", true),
            ("involvedObject.resourceVersion=", true),
            ("reason=BackOff,type=Warning,source=kubelet", true),
            ("source=sim-node-1", false),
            ("reportingComponent=", true),
        ] {
            let selector = Selector::parse(None, Some(field), &crate::resources::EVENTS).unwrap_or_else(|e| panic!("{field}: {e}"));
            assert_eq!(selector.matches(&event), expected, "{field}");
        }
        let hosts = Selector::parse(None, Some("spec.hostNetwork=false"), &PODS).unwrap();
        assert!(hosts.matches(&json!({"spec": {}})), "a missing boolean is false");
        check_match("app", "metadata.name=web-1", &pod, false);
    }

    #[test]
    fn empty_selector_matches_everything() {
        let selector = Selector::parse(None, None, &PODS).unwrap();
        assert!(selector.is_empty());
        assert!(selector.matches(&json!({})));
        assert!(selector.matches(&json!({"metadata": {"labels": {"a": "b"}}})));
        assert!(!Selector::parse(Some("a"), None, &PODS).unwrap().is_empty());
        assert!(!Selector::parse(None, Some("metadata.name=x"), &PODS).unwrap().is_empty());
    }
}
