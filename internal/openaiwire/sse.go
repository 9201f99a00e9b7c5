package openaiwire

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strings"
)

// DoneEvent is the event that ends a stream.
const DoneEvent = "data: [DONE]\n\n"

// IsDone says whether an event's data is the [DONE] that ends a stream.
func IsDone(data string) bool { return strings.TrimSpace(data) == "[DONE]" }

// MarshalEvent is v as one server-sent event: compact JSON, not
// HTML-escaped, on one data line, and the blank line that ends the event.
func MarshalEvent(v any) ([]byte, error) {
	var b bytes.Buffer
	b.WriteString("data: ")
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil { // Encode ends the line
		return nil, err
	}
	b.WriteByte('\n')
	return b.Bytes(), nil
}

// Event is one server-sent event.
type Event struct {
	// Name is its event field, "" when it has none.
	Name string
	// Data is its data lines joined by line breaks.
	Data string
	// Cut says the stream ended before the blank line that ends the event.
	// The specification drops such an event; a lenient reader may not.
	Cut bool
	// ErrorLine marks a line of llama.cpp's own field "error", which it
	// writes when it fails, handed over at once with its value as Data.
	ErrorLine bool
}

// ErrTooLarge is a line, or an event's data, longer than ReadEvents allows.
var ErrTooLarge = errors.New("server-sent event too large")

// ReadEvents reads the server-sent events of r and hands fn each event
// that has data lines, and each ErrorLine, until fn says done or fails, or
// r ends. It returns what fn last returned, or the error of reading r, or
// ErrTooLarge for a line or an event's data longer than max bytes.
// Comments, ids and other fields are skipped; a line ends with \n or \r\n.
func ReadEvents(r io.Reader, max int, fn func(Event) (done bool, err error)) (done bool, err error) {
	br := bufio.NewReaderSize(r, 64<<10)
	var (
		data    strings.Builder
		hasData bool
		name    string
		line    []byte
	)
	dispatch := func(cut bool) (bool, error) {
		ev := Event{Name: name, Data: data.String(), Cut: cut}
		send := hasData
		data.Reset()
		hasData, name = false, ""
		if !send {
			return false, nil
		}
		return fn(ev)
	}
	for {
		part, rerr := br.ReadSlice('\n')
		if len(line)+len(part) > max+2 { // room for the line's own \r\n
			return false, ErrTooLarge
		}
		line = append(line, part...)
		if rerr == bufio.ErrBufferFull {
			continue
		}
		if rerr != nil && rerr != io.EOF {
			return false, rerr
		}
		atEOF := rerr == io.EOF
		text := strings.TrimSuffix(strings.TrimSuffix(string(line), "\n"), "\r")
		line = line[:0]
		if text == "" {
			if atEOF {
				return dispatch(true)
			}
			if done, err := dispatch(false); done || err != nil {
				return done, err
			}
			continue
		}
		field, value, _ := strings.Cut(text, ":")
		value = strings.TrimPrefix(value, " ")
		switch field {
		case "data":
			if hasData {
				data.WriteByte('\n')
			}
			data.WriteString(value)
			hasData = true
			if data.Len() > max {
				return false, ErrTooLarge
			}
		case "event":
			name = value
		case "error":
			if done, err := fn(Event{Data: value, ErrorLine: true}); done || err != nil {
				return done, err
			}
		}
		if atEOF {
			return dispatch(true)
		}
	}
}
