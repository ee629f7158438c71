//! The frames the worker and a sandbox process exchange over the child's stdin and stdout.
//!
//! Every frame is a little-endian `u32` length and that many bytes. The worker sends one
//! [`Init`] frame, the child answers one status frame; then each request is a `u32` transform
//! index followed by the input JSON, and each answer a status byte ([`Status`]) followed by the
//! output JSON or a message.

use std::io::{self, Read, Write};

use serde::{Deserialize, Serialize};

/// Largest frame either side accepts from the other (a 10 MB body, base64, and room to spare).
pub const MAX_FRAME_BYTES: usize = 64 * 1024 * 1024;

/// What a sandbox process is told at start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Init {
    /// The programs, by index.
    pub transforms: Vec<String>,
    /// Longest output, in bytes.
    pub max_output_bytes: usize,
    /// Memory the process may use (its data segment limit), in bytes.
    pub max_memory_bytes: u64,
    /// The worker's pid: the child stops when it is gone.
    pub parent_pid: u32,
}

/// The first byte of an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Status {
    /// The output follows.
    Ok = 0,
    /// The transform failed for this input (a jq error); the message follows.
    Failed = 1,
    /// The transform broke a budget (output too large); the message follows.
    OverBudget = 2,
}

impl Status {
    /// The status a byte stands for.
    pub fn from_byte(b: u8) -> Option<Self> {
        match b {
            0 => Some(Status::Ok),
            1 => Some(Status::Failed),
            2 => Some(Status::OverBudget),
            _ => None,
        }
    }
}

/// Writes one frame made of `parts`.
pub fn write_frame(out: &mut impl Write, parts: &[&[u8]]) -> io::Result<()> {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let len = u32::try_from(len).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "frame too large"))?;
    out.write_all(&len.to_le_bytes())?;
    for p in parts {
        out.write_all(p)?;
    }
    out.flush()
}

/// Reads one frame; `Ok(None)` at a clean end of input.
pub fn read_frame(input: &mut impl Read) -> io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 4];
    match input.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_FRAME_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {len} bytes"),
        ));
    }
    let mut buf = vec![0u8; len];
    input.read_exact(&mut buf)?;
    Ok(Some(buf))
}

/// A request: transform index and input.
pub fn encode_request(transform: u32, input: &[u8]) -> [Vec<u8>; 2] {
    [transform.to_le_bytes().to_vec(), input.to_vec()]
}

/// Splits a request frame.
pub fn decode_request(frame: &[u8]) -> Option<(u32, &[u8])> {
    let (index, input) = frame.split_first_chunk::<4>()?;
    Some((u32::from_le_bytes(*index), input))
}

/// Splits an answer frame.
pub fn decode_answer(frame: &[u8]) -> Option<(Status, &[u8])> {
    let (status, rest) = frame.split_first()?;
    Some((Status::from_byte(*status)?, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let mut buf = Vec::new();
        let [a, b] = encode_request(7, b"{\"x\":1}");
        write_frame(&mut buf, &[&a, &b]).unwrap();
        write_frame(&mut buf, &[&[Status::Failed as u8], b"boom"]).unwrap();
        let mut r = std::io::Cursor::new(buf);
        let f = read_frame(&mut r).unwrap().unwrap();
        assert_eq!(decode_request(&f), Some((7, &b"{\"x\":1}"[..])));
        let f = read_frame(&mut r).unwrap().unwrap();
        assert_eq!(decode_answer(&f), Some((Status::Failed, &b"boom"[..])));
        assert_eq!(read_frame(&mut r).unwrap(), None);
    }

    #[test]
    fn oversized_and_garbled_frames_are_refused() {
        let mut r = std::io::Cursor::new(u32::MAX.to_le_bytes().to_vec());
        assert!(read_frame(&mut r).is_err());
        assert_eq!(decode_answer(&[9]), None);
        assert_eq!(decode_request(&[1, 2]), None);
    }
}
