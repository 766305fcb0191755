//! Transparent decompression of input streams, detected by magic bytes.

use std::io::{self, BufReader, Read};

/// What a stream turned out to be compressed with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "uncompressed",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        }
    }
}

/// A decompressing reader over `R`: what [`decompress`] returns. It is
/// `Send` when `R` is, so it can be read ahead on another thread.
pub enum Decoded<R: Read> {
    None(BufReader<Chain<R>>),
    Gzip(Box<BufReader<flate2::bufread::MultiGzDecoder<BufReader<Chain<R>>>>>),
    Zstd(BufReader<zstd::stream::read::Decoder<'static, BufReader<Chain<R>>>>),
}

type Chain<R> = io::Chain<io::Cursor<Vec<u8>>, R>;

impl<R: Read> Read for Decoded<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Decoded::None(r) => r.read(buf),
            Decoded::Gzip(r) => r.read(buf),
            Decoded::Zstd(r) => r.read(buf),
        }
    }
}

impl<R: Read> Decoded<R> {
    /// The compressed input, past what the decoder read of it.
    pub fn into_inner(self) -> R {
        match self {
            Decoded::None(r) => r.into_inner().into_inner().1,
            Decoded::Gzip(r) => r.into_inner().into_inner().into_inner().into_inner().1,
            Decoded::Zstd(r) => r.into_inner().finish().into_inner().into_inner().1,
        }
    }
}

/// Peek at the first bytes of `r` and wrap it in the matching decoder.
/// The magic is read in full even when the input trickles in byte by byte.
pub fn decompress<R: Read>(mut r: R) -> io::Result<(Compression, Decoded<R>)> {
    let mut head = [0u8; 4];
    let n = crate::fsutil::read_full(&mut r, &mut head)?;
    let head = &head[..n];
    let kind = if head.starts_with(&[0x1f, 0x8b]) {
        Compression::Gzip
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Compression::Zstd
    } else {
        Compression::None
    };
    let br = BufReader::with_capacity(256 * 1024, io::Cursor::new(head.to_vec()).chain(r));
    let out = match kind {
        Compression::Gzip => Decoded::Gzip(Box::new(BufReader::with_capacity(
            256 * 1024,
            flate2::bufread::MultiGzDecoder::new(br),
        ))),
        Compression::Zstd => Decoded::Zstd(BufReader::with_capacity(
            256 * 1024,
            zstd::stream::read::Decoder::with_buffer(br)?,
        )),
        Compression::None => Decoded::None(br),
    };
    Ok((kind, out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn detects_and_decodes() {
        let data = b"hello tar world".repeat(100);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&data).unwrap();
        let gz = gz.finish().unwrap();
        let zs = zstd::bulk::compress(&data, 3).unwrap();
        for (input, want) in [
            (&data[..], Compression::None),
            (&gz[..], Compression::Gzip),
            (&zs[..], Compression::Zstd),
        ] {
            let (kind, mut r) = decompress(input).unwrap();
            assert_eq!(kind, want);
            let mut out = Vec::new();
            r.read_to_end(&mut out).unwrap();
            assert_eq!(out, data);
        }
    }

    /// A reader that hands out one byte per call.
    struct Trickle<'a>(&'a [u8]);

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.0.is_empty() || buf.is_empty() {
                return Ok(0);
            }
            buf[0] = self.0[0];
            self.0 = &self.0[1..];
            Ok(1)
        }
    }

    #[test]
    fn detects_magic_arriving_byte_by_byte() {
        let zs = zstd::bulk::compress(b"abc", 3).unwrap();
        let (kind, mut r) = decompress(Trickle(&zs)).unwrap();
        assert_eq!(kind, Compression::Zstd);
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        assert_eq!(out, b"abc");
        let (kind, _) = decompress(Trickle(b"x")).unwrap();
        assert_eq!(kind, Compression::None);
    }

    #[test]
    fn corrupt_gzip_is_an_error() {
        let mut bad = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3];
        bad.extend_from_slice(&[0xff; 32]);
        let (_, mut r) = decompress(&bad[..]).unwrap();
        let mut out = Vec::new();
        assert!(r.read_to_end(&mut out).is_err());
    }
}
