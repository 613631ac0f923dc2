//! The portal's HTML builder: markup only from `&'static str` literals, everything else
//! through `text`, which escapes it.
//!
//! Why not maud or askama: both are fine, but each brings a proc-macro (and syn) to a
//! two-core build for pages that are a few hundred lines of markup; this builder is
//! forty lines with no dependency. Its safety rests on the type: `raw` takes only
//! `'static` strings, which are literals in Sluice's source, so no string that arrived at
//! run time (URLs, descriptions, payloads, receivers' response bodies) can reach the page
//! unescaped.

use std::fmt::Write as _;

#[derive(Default)]
pub(super) struct Html(String);

impl Html {
    pub(super) fn new() -> Html {
        Html(String::with_capacity(8 * 1024))
    }

    /// Markup from Sluice's own source.
    pub(super) fn raw(&mut self, markup: &'static str) -> &mut Html {
        self.0.push_str(markup);
        self
    }

    /// Text (or an attribute value inside double quotes), escaped.
    pub(super) fn text(&mut self, text: &str) -> &mut Html {
        for c in text.chars() {
            match c {
                '&' => self.0.push_str("&amp;"),
                '<' => self.0.push_str("&lt;"),
                '>' => self.0.push_str("&gt;"),
                '"' => self.0.push_str("&quot;"),
                '\'' => self.0.push_str("&#39;"),
                c => self.0.push(c),
            }
        }
        self
    }

    pub(super) fn num(&mut self, n: u64) -> &mut Html {
        let _ = write!(self.0, "{n}");
        self
    }

    /// `<a href="href">label</a>`, both escaped.
    pub(super) fn link(&mut self, href: &str, label: &str) -> &mut Html {
        self.raw("<a href=\"")
            .text(href)
            .raw("\">")
            .text(label)
            .raw("</a>")
    }

    /// Another builder's page part (itself built by these rules).
    pub(super) fn append(&mut self, part: &Html) -> &mut Html {
        self.0.push_str(&part.0);
        self
    }

    pub(super) fn as_str(&self) -> &str {
        &self.0
    }

    pub(super) fn into_string(self) -> String {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::Html;

    #[test]
    fn text_is_escaped_and_raw_is_not() {
        let mut h = Html::new();
        h.raw("<p title=\"")
            .text("\"><script>alert('x')</script>&")
            .raw("\">");
        assert_eq!(
            h.into_string(),
            "<p title=\"&quot;&gt;&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;\">"
        );
    }
}
