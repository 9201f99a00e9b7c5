package protocol

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// MaxMessageSize bounds one message on a stream; nothing the protocol sends
// comes near it.
const MaxMessageSize = 1 << 20

// WriteMsg writes one length-prefixed message: an unsigned varint length,
// then the bytes (the framing of libp2p's msgio/varint streams).
func WriteMsg(w io.Writer, msg []byte) error {
	if len(msg) > MaxMessageSize {
		return fmt.Errorf("message of %d bytes exceeds %d", len(msg), MaxMessageSize)
	}
	var hdr [binary.MaxVarintLen64]byte
	n := binary.PutUvarint(hdr[:], uint64(len(msg)))
	if _, err := w.Write(hdr[:n]); err != nil {
		return err
	}
	_, err := w.Write(msg)
	return err
}

// ReadMsg reads one length-prefixed message, refusing one over max bytes
// before reading it.
func ReadMsg(r *bufio.Reader, max int) ([]byte, error) {
	n, err := binary.ReadUvarint(r)
	if err != nil {
		if errors.Is(err, io.EOF) {
			return nil, io.ErrUnexpectedEOF
		}
		return nil, fmt.Errorf("message length: %w", err)
	}
	if n > uint64(max) {
		return nil, fmt.Errorf("message of %d bytes exceeds %d", n, max)
	}
	// Grow as bytes arrive rather than trust the header: a peer that
	// announces a megabyte and sends nothing costs us nothing.
	var buf bytes.Buffer
	if _, err := io.CopyN(&buf, r, int64(n)); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, fmt.Errorf("message body: %w", err)
	}
	return buf.Bytes(), nil
}
