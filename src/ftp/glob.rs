//! Shell-style patterns in the last component of a LIST/NLST argument
//! (`NLST *.txt`, `mget report-20??.csv`): `*`, `?` and `[...]` classes, as
//! glob(7) defines them, matched on bytes. As in a shell, a leading `.` must
//! be matched explicitly, so `*` does not list hidden files.

/// True when `name` contains a pattern character.
pub fn is_pattern(name: &[u8]) -> bool {
    name.iter().any(|b| matches!(b, b'*' | b'?' | b'['))
}

/// Whether `name` matches `pattern`.
pub fn matches(pattern: &[u8], name: &[u8]) -> bool {
    if name.first() == Some(&b'.') && pattern.first() != Some(&b'.') {
        return false;
    }
    match_from(pattern, name)
}

fn match_from(pattern: &[u8], name: &[u8]) -> bool {
    // Iterative matching with one backtrack point for the last `*`, which
    // is linear-ish and cannot blow up on patterns like `*a*a*a*a*b`.
    let (mut p, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, n));
                p += 1;
            }
            Some(b'?') => {
                p += 1;
                n += 1;
            }
            Some(b'[') => match class(&pattern[p..], name[n]) {
                Some((true, len)) => {
                    p += len;
                    n += 1;
                }
                Some((false, _)) => match backtrack(&mut star) {
                    Some((sp, sn)) => (p, n) = (sp, sn),
                    None => return false,
                },
                // An unclosed '[' is an ordinary character.
                None if name[n] == b'[' => {
                    p += 1;
                    n += 1;
                }
                None => match backtrack(&mut star) {
                    Some((sp, sn)) => (p, n) = (sp, sn),
                    None => return false,
                },
            },
            Some(&c) if c == name[n] => {
                p += 1;
                n += 1;
            }
            _ => match backtrack(&mut star) {
                Some((sp, sn)) => (p, n) = (sp, sn),
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// After a mismatch, let the last `*` swallow one more byte.
fn backtrack(star: &mut Option<(usize, usize)>) -> Option<(usize, usize)> {
    let (sp, sn) = (*star)?;
    *star = Some((sp, sn + 1));
    Some((sp + 1, sn + 1))
}

/// Matches `byte` against the class at the start of `pattern` (`[abc]`,
/// `[a-z]`, `[!x]`, `[^x]`); returns whether it matched and the class length,
/// or `None` when the class is not closed.
fn class(pattern: &[u8], byte: u8) -> Option<(bool, usize)> {
    let mut i = 1;
    let negated = matches!(pattern.get(i), Some(b'!' | b'^'));
    if negated {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    loop {
        let c = *pattern.get(i)?;
        if c == b']' && !first {
            return Some((matched != negated, i + 1));
        }
        first = false;
        if pattern.get(i + 1) == Some(&b'-') && pattern.get(i + 2).is_some_and(|&e| e != b']') {
            let end = pattern[i + 2];
            matched |= (c..=end).contains(&byte);
            i += 3;
        } else {
            matched |= c == byte;
            i += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn star_matches_any_run() {
        assert!(matches(b"*.txt", b"a.txt"));
        assert!(
            !matches(b"*.txt", b".txt.txt"),
            "hidden files need an explicit dot"
        );
        assert!(matches(b"*", b"anything"));
        assert!(matches(b"a*b*c", b"aXXbYYc"));
        assert!(!matches(b"*.txt", b"a.txt.bak"));
    }

    #[test]
    fn question_mark_matches_one_byte() {
        assert!(matches(b"report-20??.csv", b"report-2024.csv"));
        assert!(!matches(b"report-20??.csv", b"report-202.csv"));
    }

    #[test]
    fn classes_ranges_and_negation() {
        assert!(matches(b"[abc]x", b"bx"));
        assert!(matches(b"[a-c]x", b"cx"));
        assert!(!matches(b"[!a-c]x", b"cx"));
        assert!(matches(b"[^a-c]x", b"dx"));
        assert!(matches(b"[]]", b"]"), "a leading ] is a member");
        assert!(matches(b"a[", b"a["), "an unclosed [ is literal");
    }

    #[test]
    fn dot_files_match_patterns_that_start_with_a_dot() {
        assert!(matches(b".*", b".hidden"));
        assert!(!matches(b"*", b".hidden"));
    }

    #[test]
    fn bytes_that_are_not_utf8_match() {
        assert!(matches(b"caf?.txt", b"caf\xe9.txt"));
    }

    #[test]
    fn pathological_patterns_finish() {
        let name = vec![b'a'; 200];
        assert!(!matches(b"*a*a*a*a*a*a*a*a*b", &name));
    }

    #[test]
    fn pattern_detection() {
        assert!(is_pattern(b"*.txt"));
        assert!(is_pattern(b"a?"));
        assert!(!is_pattern(b"plain.txt"));
    }
}
