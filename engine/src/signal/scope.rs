//! Scoping queries to some labels, by adding matchers to every vector and range selector of an
//! expression.
//!
//! - `salve test --prometheus URL` writes each test's series into a shared Prometheus with a
//!   label of its own (`salve_test="<run>-<n>"`) and adds that matcher to every selector Salve
//!   then asks, so a test sees neither another test's data nor the server's own.
//! - A Salve scoped to namespaces or to its node ([`crate::scope::Scope`]) adds
//!   `namespace=~"a|b"` or `node="<its node>"` to every query it sends, so a trigger, a
//!   `verify` or a `wait_for` never sees, let alone acts on, a series outside its scope.

use promql_parser::label::{MatchOp, Matcher};
use promql_parser::parser::Expr;

use crate::check::parse_promql;

/// `expr` with `label="value"` added to each of its vector and range selectors.
pub fn scope(expr: &str, label: &str, value: &str) -> Result<String, String> {
    scope_with(expr, &[equal(label, value)])
}

/// `expr` with every one of `matchers` added to each of its vector and range selectors (to
/// each alternative of an `or` group too).
pub fn scope_with(expr: &str, matchers: &[Matcher]) -> Result<String, String> {
    let mut parsed = parse_promql(expr)?;
    for matcher in matchers {
        add(&mut parsed, matcher);
    }
    Ok(parsed.to_string())
}

/// `label="value"`.
pub fn equal(label: &str, value: &str) -> Matcher {
    Matcher::new(MatchOp::Equal, label, value)
}

/// `label=~"v1|v2|..."`: `label` is exactly one of `values` (each regex-quoted, so a value is
/// matched as written); `label="v"` for a single value. Fails for an empty list or a label
/// name PromQL does not accept.
pub fn one_of<S: AsRef<str>>(label: &str, values: &[S]) -> Result<Matcher, String> {
    match values {
        [] => Err(format!("no values for label `{label}`")),
        [one] => Ok(equal(label, one.as_ref())),
        many => {
            let alternation: Vec<String> = many.iter().map(|v| regex_quote(v.as_ref())).collect();
            // Parsed rather than built, so the regex is compiled as PromQL compiles it.
            let text = alternation.join("|");
            let selector = format!(
                "x{{{label}=~\"{}\"}}",
                text.replace('\\', "\\\\").replace('"', "\\\"")
            );
            match parse_promql(&selector)? {
                Expr::VectorSelector(vs) => vs
                    .matchers
                    .matchers
                    .into_iter()
                    .find(|m| m.name == label)
                    .ok_or_else(|| format!("`{selector}` has no matcher on `{label}`")),
                other => Err(format!("`{selector}` parsed as {other:?}")),
            }
        }
    }
}

/// `text` with every character a regular expression treats specially escaped: the set Go's
/// `regexp.QuoteMeta` escapes, as Prometheus (Go's RE2) reads the result.
pub fn regex_quote(text: &str) -> String {
    let mut quoted = String::with_capacity(text.len());
    for c in text.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            quoted.push('\\');
        }
        quoted.push(c);
    }
    quoted
}

fn add(expr: &mut Expr, matcher: &Matcher) {
    match expr {
        Expr::Aggregate(aggregate) => {
            add(&mut aggregate.expr, matcher);
            if let Some(param) = &mut aggregate.param {
                add(param, matcher);
            }
        }
        Expr::Unary(unary) => add(&mut unary.expr, matcher),
        Expr::Binary(binary) => {
            add(&mut binary.lhs, matcher);
            add(&mut binary.rhs, matcher);
        }
        Expr::Paren(paren) => add(&mut paren.expr, matcher),
        Expr::Subquery(subquery) => add(&mut subquery.expr, matcher),
        Expr::Call(call) => {
            for arg in &mut call.args.args {
                add(arg, matcher);
            }
        }
        Expr::VectorSelector(selector) => select(selector, matcher),
        Expr::MatrixSelector(range) => select(&mut range.vs, matcher),
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => {}
    }
}

fn select(selector: &mut promql_parser::parser::VectorSelector, matcher: &Matcher) {
    selector.matchers.matchers.push(matcher.clone());
    for group in &mut selector.matchers.or_matchers {
        group.push(matcher.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_selector_gets_the_matcher() {
        let scoped = scope(
            r#"sum by (a) (rate(x{code=~"5.."}[5m])) / on (a) group_left max(y offset 1m) > 0.5 or vector(1)"#,
            "salve_test",
            "r-1",
        )
        .expect("scoped");
        assert_eq!(scoped.matches(r#"salve_test="r-1""#).count(), 2, "{scoped}");
        // It still means the same, only narrower.
        let reparsed = parse_promql(&scoped).expect("valid PromQL");
        let again = reparsed.to_string();
        assert_eq!(again, scoped);
        assert!(scoped.contains(r#"code=~"5..""#), "{scoped}");
        assert!(scoped.contains("offset 1m"), "{scoped}");
    }

    #[test]
    fn every_generated_query_survives_scoping() {
        use crate::playbook::load::load_paths;
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../playbooks");
        let loaded = load_paths(&[root]);
        let mut checked = 0;
        for playbook in &loaded.playbooks {
            let Some(q) = crate::signal::queries(&playbook.trigger.kind) else {
                continue;
            };
            let key = crate::signal::state::LabelSet::from([(
                "namespace".to_string(),
                "a\"b".to_string(),
            )]);
            let all = [
                Some(q.condition.clone()),
                q.inputs_query(&[key]),
                q.values_query(),
            ];
            for expr in all.iter().flatten() {
                let scoped = scope(expr, "salve_test", "t").expect("scoped");
                let selectors = parse_promql(expr).expect("valid").to_string();
                assert!(
                    scoped.matches("salve_test").count() >= 1,
                    "{}: {scoped}",
                    playbook.name
                );
                // Dropping the added matcher gives back the query as the parser prints it.
                let unscoped = scoped
                    .replace(r#"{salve_test="t"}"#, "")
                    .replace(r#",salve_test="t""#, "")
                    .replace(r#"salve_test="t","#, "");
                assert_eq!(unscoped, selectors, "{}", playbook.name);
                checked += 1;
            }
        }
        assert!(checked >= 10, "only {checked} queries checked");
    }

    #[test]
    fn namespaces_become_one_anchored_alternation() {
        let matcher = one_of("namespace", &["shop", "kube-system"]).expect("a matcher");
        let scoped =
            scope_with("sum(rate(x[5m])) / y", std::slice::from_ref(&matcher)).expect("scoped");
        assert_eq!(
            scoped.matches(r#"namespace=~"shop|kube-system""#).count(),
            2,
            "{scoped}"
        );
        // PromQL anchors the regex: exactly these, not a prefix or a part of another name.
        assert!(matcher.is_match("shop") && matcher.is_match("kube-system"));
        assert!(!matcher.is_match("shop2") && !matcher.is_match("x-shop"));
        // One namespace is a plain equality.
        let one = one_of("namespace", &["shop"]).expect("a matcher");
        assert_eq!(one.to_string(), r#"namespace="shop""#);
        assert!(one_of::<&str>("namespace", &[]).is_err());
    }

    #[test]
    fn values_are_regex_quoted() {
        assert_eq!(regex_quote("a.b|c"), r"a\.b\|c");
        // Names that are not DNS labels still match only themselves.
        let matcher = one_of("pod", &["a.b", "c+", r#"q"x"#]).expect("a matcher");
        assert!(matcher.is_match("a.b") && matcher.is_match("c+") && matcher.is_match(r#"q"x"#));
        assert!(!matcher.is_match("aXb") && !matcher.is_match("cc"));
        let scoped = scope_with("up", &[matcher]).expect("scoped");
        let reparsed = parse_promql(&scoped).expect("valid PromQL").to_string();
        assert_eq!(reparsed, scoped);
    }

    #[test]
    fn bad_promql_is_an_error() {
        assert!(scope("sum(", "a", "b").is_err());
    }
}
