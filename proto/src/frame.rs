//! Length-delimited frames: a 4-byte big-endian length, then that many bytes of JSON.

use serde::{de::DeserializeOwned, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Largest frame either side accepts; a tokenized 128k-token context fits with room to spare.
pub const MAX_FRAME_BYTES: usize = 16 * 1024 * 1024;

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The peer closed the stream between frames.
    #[error("connection closed")]
    Closed,
    /// The stream failed, or closed in the middle of a frame.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// A frame announced more bytes than [`MAX_FRAME_BYTES`].
    #[error("frame of {0} bytes exceeds the limit of {MAX_FRAME_BYTES}")]
    TooLarge(usize),
    /// The frame's bytes are not a valid message.
    #[error("malformed message: {0}")]
    Malformed(#[from] serde_json::Error),
}

/// Encodes one message as a complete frame (length prefix included).
pub fn encode<T: Serialize>(message: &T) -> Result<Vec<u8>, FrameError> {
    let mut buf = vec![0u8; 4];
    serde_json::to_writer(&mut buf, message)?;
    let len = buf.len() - 4;
    if len > MAX_FRAME_BYTES {
        return Err(FrameError::TooLarge(len));
    }
    buf[..4].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(buf)
}

/// Decodes the payload of one frame (without its length prefix).
pub fn decode<T: DeserializeOwned>(payload: &[u8]) -> Result<T, FrameError> {
    Ok(serde_json::from_slice(payload)?)
}

/// Writes one message as a frame and flushes it.
pub async fn write_frame<W, T>(writer: &mut W, message: &T) -> Result<(), FrameError>
where
    W: AsyncWrite + Unpin,
    T: Serialize,
{
    let bytes = encode(message)?;
    writer.write_all(&bytes).await?;
    writer.flush().await?;
    Ok(())
}

/// Reads one frame and decodes it; [`FrameError::Closed`] on a clean end of stream.
pub async fn read_frame<R, T>(reader: &mut R) -> Result<T, FrameError>
where
    R: AsyncRead + Unpin,
    T: DeserializeOwned,
{
    let mut len_bytes = [0u8; 4];
    match reader.read_exact(&mut len_bytes).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(FrameError::Closed),
        Err(e) => return Err(e.into()),
    }
    let len = u32::from_be_bytes(len_bytes) as usize;
    if len > MAX_FRAME_BYTES {
        return Err(FrameError::TooLarge(len));
    }
    let mut payload = vec![0u8; len];
    reader.read_exact(&mut payload).await?;
    decode(&payload)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{RunnerMessage, ServerMessage};

    #[tokio::test]
    async fn round_trips_messages_through_a_stream() {
        let (mut a, mut b) = tokio::io::duplex(1024);
        let sent = ServerMessage::Cancel { id: 7 };
        write_frame(&mut a, &sent).await.unwrap();
        write_frame(
            &mut a,
            &RunnerMessage::Piece {
                id: 7,
                text: "hé".into(),
            },
        )
        .await
        .unwrap();
        drop(a);
        let got: ServerMessage = read_frame(&mut b).await.unwrap();
        assert_eq!(got, sent);
        let got: RunnerMessage = read_frame(&mut b).await.unwrap();
        assert_eq!(
            got,
            RunnerMessage::Piece {
                id: 7,
                text: "hé".into()
            }
        );
        assert!(matches!(
            read_frame::<_, RunnerMessage>(&mut b).await,
            Err(FrameError::Closed)
        ));
    }

    #[tokio::test]
    async fn rejects_oversized_and_truncated_frames() {
        let mut oversized: &[u8] = &u32::MAX.to_be_bytes();
        assert!(matches!(
            read_frame::<_, ServerMessage>(&mut oversized).await,
            Err(FrameError::TooLarge(_))
        ));
        let frame = encode(&ServerMessage::Shutdown).unwrap();
        let mut truncated: &[u8] = &frame[..frame.len() - 1];
        assert!(matches!(
            read_frame::<_, ServerMessage>(&mut truncated).await,
            Err(FrameError::Io(_))
        ));
        let mut garbage: &[u8] = &[0, 0, 0, 2, b'{', b'x'];
        assert!(matches!(
            read_frame::<_, ServerMessage>(&mut garbage).await,
            Err(FrameError::Malformed(_))
        ));
    }
}
