//! The little of DNS a check needs (RFC 1035): a query for one name and
//! type, and the rcode of its answer.

/// The words for an rcode in a reason ("DNS rcode 2 (SERVFAIL)").
pub(crate) fn rcode_name(rcode: u8) -> &'static str {
    match rcode {
        0 => "NOERROR",
        1 => "FORMERR",
        2 => "SERVFAIL",
        3 => "NXDOMAIN",
        4 => "NOTIMP",
        5 => "REFUSED",
        _ => "other",
    }
}

/// A recursion-desired query of `name` (dotted, "." or "" for the root)
/// for `qtype` in class IN, with message id `id`; an error names a label
/// that does not fit.
pub(crate) fn query(id: u16, name: &str, qtype: u16) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(18 + name.len());
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&[0x01, 0x00]); // RD
    out.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]); // QDCOUNT 1
    for label in name
        .trim_end_matches('.')
        .split('.')
        .filter(|l| !l.is_empty())
    {
        if label.len() > 63 {
            return Err(format!("DNS label {label:?} is over 63 bytes"));
        }
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
    if out.len() - 12 > 255 {
        return Err(format!("DNS name {name:?} is over 255 bytes"));
    }
    out.extend_from_slice(&qtype.to_be_bytes());
    out.extend_from_slice(&1u16.to_be_bytes()); // IN
    Ok(out)
}

/// The rcode of `answer` if it answers the query with id `id`.
pub(crate) fn answer_rcode(id: u16, answer: &[u8]) -> Result<u8, String> {
    if answer.len() < 12 {
        return Err(format!("DNS answer of {} bytes", answer.len()));
    }
    if u16::from_be_bytes([answer[0], answer[1]]) != id {
        return Err("DNS answer to another query".into());
    }
    if answer[2] & 0x80 == 0 {
        return Err("DNS message is no answer".into());
    }
    Ok(answer[3] & 0x0f)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A query of example.org for A, id 0x1234, as dig sends it (less
    /// its EDNS record).
    static QUERY_BYTES: [u8; 29] = [
        0x12, 0x34, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x07, b'e', b'x',
        b'a', b'm', b'p', b'l', b'e', 0x03, b'o', b'r', b'g', 0x00, 0x00, 0x01, 0x00, 0x01,
    ];

    #[test]
    fn a_query_is_header_and_question() {
        assert_eq!(query(0x1234, "example.org", 1).unwrap(), QUERY_BYTES);
        assert_eq!(query(0x1234, "example.org.", 1).unwrap(), QUERY_BYTES);
    }

    #[test]
    fn the_root_is_one_zero_byte() {
        let q = query(7, ".", 6).unwrap();
        assert_eq!(&q[12..], &[0, 0, 6, 0, 1]);
        assert_eq!(query(7, "", 6).unwrap(), q);
    }

    #[test]
    fn an_overlong_label_is_refused() {
        let long = "a".repeat(64);
        assert!(query(1, &long, 1).unwrap_err().contains("over 63"));
    }

    #[test]
    fn the_rcode_comes_from_a_matching_answer() {
        let mut answer = QUERY_BYTES;
        answer[2] |= 0x80;
        answer[3] = 0x83; // RA, NXDOMAIN
        assert_eq!(answer_rcode(0x1234, &answer), Ok(3));
        assert_eq!(rcode_name(3), "NXDOMAIN");
        assert!(answer_rcode(0x1235, &answer).is_err());
        assert!(answer_rcode(0x1234, &QUERY_BYTES).is_err());
        assert!(answer_rcode(0x1234, &answer[..11]).is_err());
    }
}
