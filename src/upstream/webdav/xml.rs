//! PROPFIND and PROPPATCH bodies, and the `207 Multi-Status` parser
//! (RFC 4918 §9.1, §9.2, §14.16).
//!
//! Pure: text in, values out. Servers differ in everything XML allows, so
//! the parser matches elements by namespace URI and local name, never by
//! prefix (`D:`, `d:`, `lp1:` and default namespaces all occur), gathers
//! text across entity events (quick-xml 0.42 reports `R&amp;D` as three
//! events; crates.md §5), ignores elements it does not know, and keeps only
//! properties from `propstat` blocks whose status is 2xx (servers answer
//! 404 for properties they do not have).

use quick_xml::events::{BytesRef, Event};
use quick_xml::name::{Namespace, ResolveResult};
use quick_xml::reader::NsReader;

/// The DAV: namespace URI.
const DAV: &str = "DAV:";

/// Depth 0/1 PROPFIND for listings and stat: only the properties we use.
pub const PROPFIND_ENTRIES: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<D:propfind xmlns:D="DAV:"><D:prop><D:resourcetype/><D:getcontentlength/><D:getlastmodified/></D:prop></D:propfind>
"#;

/// RFC 4331 quota properties.
pub const PROPFIND_QUOTA: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<D:propfind xmlns:D="DAV:"><D:prop><D:quota-available-bytes/><D:quota-used-bytes/></D:prop></D:propfind>
"#;

/// PROPPATCH of `getlastmodified` to `http_date` (RFC 1123 form). Most
/// servers protect this live property; those that accept it (SabreDAV-based
/// ones) set the modification time.
pub fn proppatch_last_modified(http_date: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="utf-8"?>
<D:propertyupdate xmlns:D="DAV:"><D:set><D:prop><D:getlastmodified>{http_date}</D:getlastmodified></D:prop></D:set></D:propertyupdate>
"#
    )
}

/// Properties of one resource, from its successful `propstat` blocks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Props {
    /// `resourcetype` contains `collection`.
    pub collection: bool,
    pub content_length: Option<u64>,
    /// Seconds since the Unix epoch.
    pub last_modified: Option<i64>,
    pub quota_available: Option<u64>,
    pub quota_used: Option<u64>,
    /// Status codes of the `propstat` blocks that were not 2xx (PROPPATCH
    /// answers say per property whether it was set).
    pub failed_statuses: Vec<u16>,
}

/// One `<response>` of a multistatus.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Response {
    /// The href as sent, entities resolved, still percent-encoded.
    pub href: String,
    /// A response-level `<status>` (for a resource without properties).
    pub status: Option<u16>,
    /// Whether any 2xx `propstat` block was present.
    pub found: bool,
    pub props: Props,
}

/// Why a body is not a multistatus we can use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("malformed XML: {0}")]
    Xml(String),
    #[error("no DAV:multistatus element")]
    NotMultistatus,
    #[error("a DAV:response without an href")]
    MissingHref,
    #[error("bad value {value:?} in DAV:{element}")]
    BadValue {
        element: &'static str,
        value: String,
    },
}

/// The DAV: elements whose text we read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Leaf {
    Href,
    Status,
    ContentLength,
    LastModified,
    QuotaAvailable,
    QuotaUsed,
}

impl Leaf {
    fn from_name(name: &str) -> Option<Leaf> {
        Some(match name {
            "href" => Leaf::Href,
            "status" => Leaf::Status,
            "getcontentlength" => Leaf::ContentLength,
            "getlastmodified" => Leaf::LastModified,
            "quota-available-bytes" => Leaf::QuotaAvailable,
            "quota-used-bytes" => Leaf::QuotaUsed,
            _ => return None,
        })
    }
}

/// One open element: whether it is in the DAV: namespace, and its local name.
#[derive(Debug, Clone)]
struct Open {
    dav: bool,
    name: String,
}

/// The state of one `<propstat>` being read.
#[derive(Debug, Default)]
struct PropStat {
    props: Props,
    status: Option<u16>,
}

/// Parses a `207 Multi-Status` body into its responses, in document order.
pub fn parse_multistatus(xml: &str) -> Result<Vec<Response>, ParseError> {
    let mut reader = NsReader::from_str(xml);
    let mut stack: Vec<Open> = Vec::new();
    let mut responses = Vec::new();
    let mut response: Option<Response> = None;
    let mut propstat: Option<PropStat> = None;
    let mut text = String::new();
    let mut seen_multistatus = false;

    loop {
        let (ns, event) = reader
            .read_resolved_event()
            .map_err(|e| ParseError::Xml(e.to_string()))?;
        let dav = matches!(ns, ResolveResult::Bound(Namespace(uri)) if uri == DAV);
        match event {
            Event::Start(start) => {
                let name = start.local_name().as_ref().to_owned();
                if dav {
                    open_element(&name, &stack, &mut response, &mut propstat);
                    seen_multistatus |= name == "multistatus";
                }
                text.clear();
                stack.push(Open { dav, name });
            }
            Event::Empty(start) => {
                let name = start.local_name();
                if dav
                    && name.as_ref() == "collection"
                    && in_dav(&stack, "resourcetype")
                    && let Some(propstat) = propstat.as_mut()
                {
                    propstat.props.collection = true;
                }
            }
            Event::Text(t) => text.push_str(&t.xml10_content()),
            Event::CData(c) => text.push_str(&c.xml10_content()),
            Event::GeneralRef(r) => push_reference(&mut text, &r)?,
            Event::End(_) => {
                let Some(open) = stack.pop() else {
                    return Err(ParseError::Xml("unbalanced end tag".into()));
                };
                if open.dav {
                    close_element(
                        &open.name,
                        &stack,
                        &text,
                        &mut response,
                        &mut propstat,
                        &mut responses,
                    )?;
                }
                text.clear();
            }
            // A truncated body must not pass for a shorter listing.
            Event::Eof if !stack.is_empty() => {
                return Err(ParseError::Xml(format!(
                    "the document ends inside <{}>",
                    stack.last().map_or("", |o| o.name.as_str())
                )));
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if !seen_multistatus {
        return Err(ParseError::NotMultistatus);
    }
    Ok(responses)
}

/// Whether the innermost open element is DAV:`name`.
fn in_dav(stack: &[Open], name: &str) -> bool {
    stack.last().is_some_and(|o| o.dav && o.name == name)
}

fn open_element(
    name: &str,
    stack: &[Open],
    response: &mut Option<Response>,
    propstat: &mut Option<PropStat>,
) {
    match name {
        "response" if in_dav(stack, "multistatus") => *response = Some(Response::default()),
        "propstat" if response.is_some() => *propstat = Some(PropStat::default()),
        // `<D:collection></D:collection>` written out in full.
        "collection" if in_dav(stack, "resourcetype") => {
            if let Some(propstat) = propstat.as_mut() {
                propstat.props.collection = true;
            }
        }
        _ => {}
    }
}

fn close_element(
    name: &str,
    stack: &[Open],
    text: &str,
    response: &mut Option<Response>,
    propstat: &mut Option<PropStat>,
    responses: &mut Vec<Response>,
) -> Result<(), ParseError> {
    if let Some(leaf) = Leaf::from_name(name) {
        // Only values directly inside a `prop` (or the response's own href
        // and status) count; `href`s inside other properties do not.
        let parent = stack.last().filter(|o| o.dav).map(|o| o.name.as_str());
        let value = text.trim();
        match (leaf, parent, propstat.as_mut(), response.as_mut()) {
            (Leaf::Href, Some("response"), _, Some(response)) => response.href = value.to_owned(),
            (Leaf::Status, Some("response"), _, Some(response)) => {
                response.status = Some(status_code(value)?)
            }
            (Leaf::Status, Some("propstat"), Some(propstat), _) => {
                propstat.status = Some(status_code(value)?)
            }
            (Leaf::ContentLength, Some("prop"), Some(propstat), _) if !value.is_empty() => {
                propstat.props.content_length = Some(number(value, "getcontentlength")?)
            }
            (Leaf::LastModified, Some("prop"), Some(propstat), _) if !value.is_empty() => {
                // An unreadable date is not worth failing a listing over.
                propstat.props.last_modified = http_date(value)
            }
            (Leaf::QuotaAvailable, Some("prop"), Some(propstat), _) if !value.is_empty() => {
                propstat.props.quota_available = Some(number(value, "quota-available-bytes")?)
            }
            (Leaf::QuotaUsed, Some("prop"), Some(propstat), _) if !value.is_empty() => {
                propstat.props.quota_used = Some(number(value, "quota-used-bytes")?)
            }
            _ => {}
        }
        return Ok(());
    }
    match name {
        "propstat" => {
            if let (Some(done), Some(response)) = (propstat.take(), response.as_mut()) {
                merge_propstat(response, done);
            }
        }
        "response" if in_dav(stack, "multistatus") => {
            if let Some(done) = response.take() {
                if done.href.is_empty() {
                    return Err(ParseError::MissingHref);
                }
                responses.push(done);
            }
        }
        _ => {}
    }
    Ok(())
}

/// Keeps a propstat's values only if its status is 2xx (a missing status is
/// taken as success, as some servers omit it).
fn merge_propstat(response: &mut Response, propstat: PropStat) {
    let status = propstat.status.unwrap_or(200);
    if !(200..300).contains(&status) {
        response.props.failed_statuses.push(status);
        return;
    }
    response.found = true;
    let props = propstat.props;
    let target = &mut response.props;
    target.collection |= props.collection;
    target.content_length = props.content_length.or(target.content_length);
    target.last_modified = props.last_modified.or(target.last_modified);
    target.quota_available = props.quota_available.or(target.quota_available);
    target.quota_used = props.quota_used.or(target.quota_used);
}

/// `&amp;` and friends, and `&#38;`/`&#x26;` character references.
fn push_reference(text: &mut String, reference: &BytesRef<'_>) -> Result<(), ParseError> {
    if let Some(c) = reference
        .resolve_char_ref()
        .map_err(|e| ParseError::Xml(e.to_string()))?
    {
        text.push(c);
        return Ok(());
    }
    let name = reference.xml10_content();
    match quick_xml::escape::resolve_predefined_entity(&name) {
        Some(value) => {
            text.push_str(value);
            Ok(())
        }
        None => Err(ParseError::Xml(format!("unknown entity &{name};"))),
    }
}

/// `HTTP/1.1 404 Not Found` → 404.
fn status_code(line: &str) -> Result<u16, ParseError> {
    line.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .filter(|code| (100..600).contains(code))
        .ok_or_else(|| ParseError::BadValue {
            element: "status",
            value: line.to_owned(),
        })
}

fn number(value: &str, element: &'static str) -> Result<u64, ParseError> {
    value.parse().map_err(|_| ParseError::BadValue {
        element,
        value: value.to_owned(),
    })
}

/// RFC 1123 dates (`Sun, 06 Nov 1994 08:49:37 GMT`, what RFC 4918 requires),
/// and RFC 3339 as some servers send.
pub fn http_date(value: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc2822(value)
        .or_else(|_| chrono::DateTime::parse_from_rfc3339(value))
        .ok()
        .map(|t| t.timestamp())
}

/// The RFC 1123 form of `seconds` since the epoch.
pub fn format_http_date(seconds: i64) -> Option<String> {
    chrono::DateTime::from_timestamp(seconds, 0)
        .map(|t| t.format("%a, %d %b %Y %H:%M:%S GMT").to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// nginx dav-ext: `D:` prefix, hrefs escaped, no quota properties.
    const NGINX: &str = r#"<?xml version="1.0" encoding="utf-8" ?>
<D:multistatus xmlns:D="DAV:">
<D:response>
<D:href>/dav/alice/</D:href>
<D:propstat>
<D:prop>
<D:resourcetype><D:collection/></D:resourcetype>
<D:getlastmodified>Sat, 21 Nov 2026 07:19:33 GMT</D:getlastmodified>
</D:prop>
<D:status>HTTP/1.1 200 OK</D:status>
</D:propstat>
</D:response>
<D:response>
<D:href>/dav/alice/R%26D%20plan.txt</D:href>
<D:propstat>
<D:prop>
<D:resourcetype></D:resourcetype>
<D:getcontentlength>12</D:getcontentlength>
<D:getlastmodified>Sat, 21 Nov 2026 07:20:00 GMT</D:getlastmodified>
</D:prop>
<D:status>HTTP/1.1 200 OK</D:status>
</D:propstat>
</D:response>
</D:multistatus>
"#;

    /// Apache mod_dav: `lp1:` for live properties, a 404 propstat, `&amp;`
    /// in the href, an absolute URL.
    const APACHE: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<D:multistatus xmlns:D="DAV:" xmlns:ns0="DAV:">
<D:response xmlns:lp1="DAV:" xmlns:lp2="http://apache.org/dav/props/">
<D:href>http://127.0.0.1:8080/dav/a&amp;b%20c/</D:href>
<D:propstat>
<D:prop>
<lp1:resourcetype><D:collection/></lp1:resourcetype>
<lp1:getlastmodified>Mon, 02 Mar 2026 10:00:00 GMT</lp1:getlastmodified>
</D:prop>
<D:status>HTTP/1.1 200 OK</D:status>
</D:propstat>
<D:propstat>
<D:prop>
<D:getcontentlength/>
</D:prop>
<D:status>HTTP/1.1 404 Not Found</D:status>
</D:propstat>
</D:response>
</D:multistatus>
"#;

    #[test]
    fn nginx_listing_gives_the_collection_first_then_its_members() {
        let responses = parse_multistatus(NGINX).unwrap();
        assert_eq!(responses.len(), 2);
        assert_eq!(responses[0].href, "/dav/alice/");
        assert!(responses[0].props.collection);
        let file = &responses[1];
        assert_eq!(file.href, "/dav/alice/R%26D%20plan.txt");
        assert!(!file.props.collection);
        assert_eq!(file.props.content_length, Some(12));
        assert_eq!(file.props.last_modified, Some(1_795_245_600));
        assert!(file.found);
    }

    #[test]
    fn prefixes_do_not_matter_only_the_namespace_uri() {
        let responses = parse_multistatus(APACHE).unwrap();
        assert_eq!(responses.len(), 1);
        let dir = &responses[0];
        assert_eq!(dir.href, "http://127.0.0.1:8080/dav/a&b%20c/");
        assert!(dir.props.collection);
        assert_eq!(dir.props.last_modified, Some(1_772_445_600));
    }

    #[test]
    fn properties_of_a_404_propstat_are_ignored() {
        let responses = parse_multistatus(APACHE).unwrap();
        assert_eq!(responses[0].props.content_length, None);
        assert_eq!(responses[0].props.failed_statuses, vec![404]);
        assert!(responses[0].found);
    }

    #[test]
    fn a_default_namespace_and_entities_split_across_events_are_read_whole() {
        let xml = r#"<multistatus xmlns="DAV:"><response>
            <href>/d/R&amp;D &#x26; &#38;co&lt;1&gt;.txt</href>
            <propstat><prop><getcontentlength>5</getcontentlength><resourcetype/></prop>
            <status>HTTP/1.1 200 OK</status></propstat></response></multistatus>"#;
        let responses = parse_multistatus(xml).unwrap();
        assert_eq!(responses[0].href, "/d/R&D & &co<1>.txt");
        assert_eq!(responses[0].props.content_length, Some(5));
        assert!(!responses[0].props.collection);
    }

    #[test]
    fn elements_of_other_namespaces_with_dav_names_are_not_dav_properties() {
        let xml = r#"<d:multistatus xmlns:d="DAV:" xmlns:x="urn:other"><d:response>
            <d:href>/f</d:href>
            <d:propstat><d:prop>
              <x:getcontentlength>999</x:getcontentlength>
              <d:resourcetype><x:collection/></d:resourcetype>
              <d:getcontentlength>7</d:getcontentlength>
            </d:prop><d:status>HTTP/1.1 200 OK</d:status></d:propstat>
            </d:response></d:multistatus>"#;
        let responses = parse_multistatus(xml).unwrap();
        assert_eq!(responses[0].props.content_length, Some(7));
        assert!(!responses[0].props.collection);
    }

    #[test]
    fn a_response_level_status_is_kept_for_members_without_properties() {
        let xml = r#"<D:multistatus xmlns:D="DAV:">
            <D:response><D:href>/d/</D:href><D:propstat><D:prop><D:resourcetype><D:collection></D:collection></D:resourcetype></D:prop><D:status>HTTP/1.1 200 OK</D:status></D:propstat></D:response>
            <D:response><D:href>/d/secret</D:href><D:status>HTTP/1.1 403 Forbidden</D:status></D:response>
            </D:multistatus>"#;
        let responses = parse_multistatus(xml).unwrap();
        assert!(
            responses[0].props.collection,
            "long-form <collection></collection>"
        );
        assert_eq!(responses[1].status, Some(403));
        assert!(!responses[1].found);
    }

    #[test]
    fn quota_properties_are_read() {
        let xml = r#"<D:multistatus xmlns:D="DAV:"><D:response><D:href>/</D:href>
            <D:propstat><D:prop><D:quota-available-bytes>1048576</D:quota-available-bytes>
            <D:quota-used-bytes>10</D:quota-used-bytes></D:prop>
            <D:status>HTTP/1.1 200 OK</D:status></D:propstat></D:response></D:multistatus>"#;
        let props = &parse_multistatus(xml).unwrap()[0].props;
        assert_eq!(props.quota_available, Some(1_048_576));
        assert_eq!(props.quota_used, Some(10));
    }

    #[test]
    fn bodies_that_are_not_a_usable_multistatus_are_errors() {
        assert_eq!(
            parse_multistatus("<html><body>Login</body></html>"),
            Err(ParseError::NotMultistatus)
        );
        assert!(matches!(
            parse_multistatus("<D:multistatus xmlns:D=\"DAV:\"><D:response>"),
            Err(ParseError::Xml(_))
        ));
        assert_eq!(
            parse_multistatus(
                "<D:multistatus xmlns:D=\"DAV:\"><D:response><D:status>HTTP/1.1 200 OK</D:status></D:response></D:multistatus>"
            ),
            Err(ParseError::MissingHref)
        );
        assert!(matches!(
            parse_multistatus(
                "<D:multistatus xmlns:D=\"DAV:\"><D:response><D:href>/</D:href><D:propstat><D:prop><D:getcontentlength>-1</D:getcontentlength></D:prop></D:propstat></D:response></D:multistatus>"
            ),
            Err(ParseError::BadValue { .. })
        ));
    }

    #[test]
    fn http_dates_round_trip() {
        let text = format_http_date(1_795_245_600).unwrap();
        assert_eq!(text, "Sat, 21 Nov 2026 07:20:00 GMT");
        assert_eq!(http_date(&text), Some(1_795_245_600));
        assert_eq!(http_date("2026-11-21T07:20:00Z"), Some(1_795_245_600));
        assert_eq!(http_date("yesterday"), None);
    }

    #[test]
    fn proppatch_sets_getlastmodified_in_the_dav_namespace() {
        let body = proppatch_last_modified("Sat, 21 Nov 2026 07:20:00 GMT");
        assert!(
            body.contains("<D:getlastmodified>Sat, 21 Nov 2026 07:20:00 GMT</D:getlastmodified>")
        );
        assert!(body.contains("xmlns:D=\"DAV:\""));
    }
}
