//! A saved HTTP/1.1 request: request line, headers, blank line, raw body (CRLF or LF).

pub struct SavedRequest {
    pub method: String,
    pub path: String,
    pub authority: String,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
}

pub fn parse(raw: &[u8]) -> Result<SavedRequest, String> {
    let (head, body) = split_head(raw).ok_or("no blank line between headers and body")?;
    let head = std::str::from_utf8(head).map_err(|_| "the request head is not UTF-8")?;
    let mut lines = head.lines();
    let request_line = lines.next().ok_or("empty request")?;
    let mut parts = request_line.split_whitespace();
    let method = parts.next().ok_or("no method")?.to_string();
    let path = parts.next().ok_or("no request target")?.to_string();
    let mut headers = Vec::new();
    let mut authority = String::new();
    for line in lines {
        let (k, v) = line
            .split_once(':')
            .ok_or_else(|| format!("bad header line '{line}'"))?;
        let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
        if k == "host" {
            authority = v.to_string();
        }
        headers.push((k, v.as_bytes().to_vec()));
    }
    Ok(SavedRequest {
        method,
        path,
        authority,
        headers,
        body: body.to_vec(),
    })
}

fn split_head(raw: &[u8]) -> Option<(&[u8], &[u8])> {
    for sep in [&b"\r\n\r\n"[..], &b"\n\n"[..]] {
        if let Some(at) = raw.windows(sep.len()).position(|w| w == sep) {
            return Some((raw.get(..at)?, raw.get(at.checked_add(sep.len())?..)?));
        }
    }
    None
}
