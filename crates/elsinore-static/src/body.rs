//! Streaming a file (or part of it) from disk, for files too large to
//! keep in memory.

use std::io::{self, SeekFrom};
use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use tokio::fs::File;
use tokio::io::{AsyncRead, AsyncSeekExt, ReadBuf};

/// Bytes read from disk per frame.
const CHUNK: usize = 64 * 1024;

/// `len` bytes of a file from an offset, read a chunk at a time as the
/// client takes them (tokio's file reads run on its blocking pool).
#[derive(Debug)]
pub struct FileBody {
    file: File,
    remaining: u64,
    buffer: BytesMut,
}

impl FileBody {
    /// Opens `path` and positions it at `start`.
    pub(crate) async fn open(path: &Path, start: u64, len: u64) -> io::Result<Self> {
        let mut file = File::open(path).await?;
        if start > 0 {
            file.seek(SeekFrom::Start(start)).await?;
        }
        Ok(Self {
            file,
            remaining: len,
            buffer: BytesMut::new(),
        })
    }
}

impl Body for FileBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = &mut *self;
        if this.remaining == 0 {
            return Poll::Ready(None);
        }
        let want = usize::try_from(this.remaining).map_or(CHUNK, |left| left.min(CHUNK));
        // A zeroed buffer keeps this free of `unsafe`; the memset is
        // nothing next to the read itself.
        this.buffer.resize(want, 0);
        let mut read = ReadBuf::new(&mut this.buffer[..]);
        match Pin::new(&mut this.file).poll_read(cx, &mut read) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(err)) => Poll::Ready(Some(Err(err))),
            Poll::Ready(Ok(())) => {
                let filled = read.filled().len();
                if filled == 0 {
                    // The file shrank after its length was announced: the
                    // response cannot be completed, so it is cut.
                    return Poll::Ready(Some(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the file became shorter while it was sent",
                    ))));
                }
                this.buffer.truncate(filled);
                this.remaining -= filled as u64;
                Poll::Ready(Some(Ok(Frame::data(this.buffer.split().freeze()))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}
