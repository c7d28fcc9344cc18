//! Bounds-checked big-endian field reading and writing shared by every message codec.
//!
//! Peer bytes are only ever read through [`Reader`], which returns an error instead of
//! panicking when a field runs past the end of the message.

use bytes::BufMut;

/// A field of a message could not be read: the message ended early or a field is malformed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FieldError {
    /// The message ended inside the named field.
    Truncated(&'static str),
    /// A length-prefixed field is longer than the protocol allows.
    TooLong {
        /// The field.
        field: &'static str,
        /// Its declared length.
        len: usize,
        /// The protocol's limit for it.
        max: usize,
    },
    /// A text field is not valid UTF-8.
    NotUtf8(&'static str),
    /// Bytes follow the last field of the message.
    Trailing(usize),
    /// A field holds a value the protocol does not define.
    BadValue(&'static str),
}

/// Reads fields front to back out of one message body.
pub(crate) struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(body: &'a [u8]) -> Self {
        Self { rest: body }
    }

    pub(crate) fn bytes(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], FieldError> {
        if self.rest.len() < n {
            return Err(FieldError::Truncated(field));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    pub(crate) fn array<const N: usize>(
        &mut self,
        field: &'static str,
    ) -> Result<[u8; N], FieldError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.bytes(N, field)?);
        Ok(out)
    }

    pub(crate) fn u8(&mut self, field: &'static str) -> Result<u8, FieldError> {
        Ok(u8::from_be_bytes(self.array(field)?))
    }

    pub(crate) fn u16(&mut self, field: &'static str) -> Result<u16, FieldError> {
        Ok(u16::from_be_bytes(self.array(field)?))
    }

    pub(crate) fn u32(&mut self, field: &'static str) -> Result<u32, FieldError> {
        Ok(u32::from_be_bytes(self.array(field)?))
    }

    pub(crate) fn u64(&mut self, field: &'static str) -> Result<u64, FieldError> {
        Ok(u64::from_be_bytes(self.array(field)?))
    }

    /// A field written as a u16 length followed by that many bytes, at most `max` long.
    pub(crate) fn lp16(&mut self, field: &'static str, max: usize) -> Result<&'a [u8], FieldError> {
        let len = usize::from(self.u16(field)?);
        if len > max {
            return Err(FieldError::TooLong { field, len, max });
        }
        self.bytes(len, field)
    }

    /// A UTF-8 text field written as [`Reader::lp16`].
    pub(crate) fn text(&mut self, field: &'static str, max: usize) -> Result<&'a str, FieldError> {
        std::str::from_utf8(self.lp16(field, max)?).map_err(|_| FieldError::NotUtf8(field))
    }

    /// Every field has been read; anything left over is an error.
    pub(crate) fn finish(self) -> Result<(), FieldError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(FieldError::Trailing(self.rest.len()))
        }
    }
}

/// Appends a u16 length and the bytes. Callers guarantee `bytes.len() <= u16::MAX`
/// (every field passed here is validated against a smaller protocol limit first);
/// longer input is cut to the limit rather than panicking.
pub(crate) fn put_lp16(dst: &mut impl BufMut, bytes: &[u8]) {
    let len = u16::try_from(bytes.len()).unwrap_or(u16::MAX);
    dst.put_u16(len);
    dst.put_slice(bytes.get(..usize::from(len)).unwrap_or(bytes));
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Truncated(field) => write!(f, "it ends inside the {field} field"),
            Self::TooLong { field, len, max } => {
                write!(
                    f,
                    "its {field} field is {len} bytes, more than the {max} allowed"
                )
            }
            Self::NotUtf8(field) => write!(f, "its {field} field is not UTF-8 text"),
            Self::Trailing(n) => write!(f, "{n} unexpected bytes follow its last field"),
            Self::BadValue(field) => write!(
                f,
                "its {field} field holds a value the protocol does not define"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_reports_truncation_and_trailing_bytes() {
        let mut r = Reader::new(&[0, 3, b'a', b'b']);
        assert_eq!(r.lp16("name", 10), Err(FieldError::Truncated("name")));
        let mut r = Reader::new(&[0, 1, b'a', 9]);
        assert_eq!(r.lp16("name", 10), Ok(&b"a"[..]));
        assert_eq!(r.finish(), Err(FieldError::Trailing(1)));
    }

    #[test]
    fn reader_refuses_overlong_and_non_utf8_fields() {
        let mut r = Reader::new(&[0, 3, b'a', b'b', b'c']);
        assert_eq!(
            r.lp16("id", 2),
            Err(FieldError::TooLong {
                field: "id",
                len: 3,
                max: 2
            })
        );
        let mut r = Reader::new(&[0, 1, 0xff]);
        assert_eq!(r.text("id", 2), Err(FieldError::NotUtf8("id")));
    }
}
