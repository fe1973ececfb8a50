//! `${...}` templates in playbook strings: `name: "${owner.name}"`, `pod=~"${target.name}-.*"`.
//!
//! A template is parsed once at load time into literal parts and variable references, so a
//! reference to an unknown variable is a load error, not a surprise during an incident.

use std::fmt;

/// A string with `${a.b}` references. `$$` writes a literal `$`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    source: String,
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Variable(Variable),
}

/// A `${...}` reference: a dotted path such as `labels.namespace`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Variable {
    /// The path's segments, root first.
    pub path: Vec<String>,
}

impl fmt::Display for Variable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.path.join("."))
    }
}

/// Why a template does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A `${` without its `}`.
    #[error("unclosed `${{` at character {at}")]
    Unclosed {
        /// Character offset of the `${`.
        at: usize,
    },
    /// `${}` or a malformed path inside the braces.
    #[error("`${{{inner}}}` is not a variable reference")]
    BadReference {
        /// What was inside the braces.
        inner: String,
    },
}

/// `Result` with this module's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Template {
    /// Parses `source`.
    pub fn parse(source: &str) -> Result<Self> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut rest = source;
        let mut offset = 0;
        while let Some(dollar) = rest.find('$') {
            literal.push_str(&rest[..dollar]);
            let after = &rest[dollar + 1..];
            if let Some(tail) = after.strip_prefix('$') {
                literal.push('$');
                offset += dollar + 2;
                rest = tail;
            } else if let Some(body) = after.strip_prefix('{') {
                let at = source[..offset + dollar].chars().count();
                let close = body.find('}').ok_or(Error::Unclosed { at })?;
                let inner = body[..close].trim();
                let path: Vec<String> = inner.split('.').map(str::to_string).collect();
                let valid = path.iter().all(|s| {
                    !s.is_empty()
                        && s.chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                });
                if !valid {
                    return Err(Error::BadReference {
                        inner: inner.to_string(),
                    });
                }
                if !literal.is_empty() {
                    parts.push(Part::Literal(std::mem::take(&mut literal)));
                }
                parts.push(Part::Variable(Variable { path }));
                let consumed = dollar + 2 + close + 1;
                offset += consumed;
                rest = &rest[consumed..];
            } else {
                literal.push('$');
                offset += dollar + 1;
                rest = after;
            }
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            parts.push(Part::Literal(literal));
        }
        Ok(Template {
            source: source.to_string(),
            parts,
        })
    }

    /// The text as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The variables it references, in order.
    pub fn variables(&self) -> impl Iterator<Item = &Variable> {
        self.parts.iter().filter_map(|p| match p {
            Part::Variable(v) => Some(v),
            Part::Literal(_) => None,
        })
    }

    /// Whether it references no variable.
    pub fn is_literal(&self) -> bool {
        self.variables().next().is_none()
    }

    /// Fills every variable with `lookup`; the first variable it cannot resolve is returned as
    /// the error, so nothing acts on a half-filled name.
    pub fn render(
        &self,
        mut lookup: impl FnMut(&Variable) -> Option<String>,
    ) -> std::result::Result<String, &Variable> {
        let mut out = String::with_capacity(self.source.len());
        for part in &self.parts {
            match part {
                Part::Literal(text) => out.push_str(text),
                Part::Variable(v) => out.push_str(&lookup(v).ok_or(v)?),
            }
        }
        Ok(out)
    }

    /// The text with every variable replaced by `placeholder`, to check the syntax of what it
    /// is embedded in (PromQL, for instance) at load time.
    pub fn with_placeholders(&self, placeholder: &str) -> String {
        self.render(|_| Some(placeholder.to_string()))
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_literals_and_references() {
        let t = Template::parse("${labels.namespace}/x-${owner.name}$$").expect("parses");
        let vars: Vec<String> = t.variables().map(ToString::to_string).collect();
        assert_eq!(vars, ["labels.namespace", "owner.name"]);
        let out = t.render(|v| Some(v.path.last().cloned().unwrap_or_default()));
        assert_eq!(out.as_deref(), Ok("namespace/x-name$"));
    }

    #[test]
    fn a_lone_dollar_is_literal() {
        let t = Template::parse("cost > $5").expect("parses");
        assert!(t.is_literal());
        assert_eq!(t.render(|_| None).as_deref(), Ok("cost > $5"));
    }

    #[test]
    fn rendering_fails_on_the_first_unresolved_variable() {
        let t = Template::parse("${a}-${b}").expect("parses");
        let err = t
            .render(|v| (v.path[0] == "a").then(|| "1".into()))
            .expect_err("b is unknown");
        assert_eq!(err.to_string(), "b");
    }

    #[test]
    fn malformed_references_are_errors() {
        assert_eq!(
            Template::parse("x ${labels.ns"),
            Err(Error::Unclosed { at: 2 })
        );
        assert!(matches!(
            Template::parse("${}"),
            Err(Error::BadReference { .. })
        ));
        assert!(matches!(
            Template::parse("${a..b}"),
            Err(Error::BadReference { .. })
        ));
    }
}
