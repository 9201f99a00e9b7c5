package openaiwire

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"testing/iotest"
)

func readAll(t *testing.T, in string, max int) ([]Event, bool, error) {
	t.Helper()
	var evs []Event
	done, err := ReadEvents(strings.NewReader(in), max, func(ev Event) (bool, error) {
		evs = append(evs, ev)
		return IsDone(ev.Data), nil
	})
	return evs, done, err
}

func TestReadEvents(t *testing.T) {
	in := ": comment\r\n\r\n" +
		"retry: 10\nid: 7\nevent: message\n" +
		"data:{\"a\":\n" +
		"data: 1}\r\n\r\n\n\n" +
		"event: lonely\n\n" + // no data: no event, and its name does not carry over
		"data:\n\n" +
		"error: {\"message\":\"boom\"}\n" +
		"data: [DONE]\n\n" +
		"data: after\n\n"
	evs, done, err := readAll(t, in, 1<<10)
	want := []Event{
		{Name: "message", Data: "{\"a\":\n1}"},
		{Data: ""},
		{Data: `{"message":"boom"}`, ErrorLine: true},
		{Data: "[DONE]"},
	}
	if err != nil || !done || !reflect.DeepEqual(evs, want) {
		t.Fatalf("done %v, err %v, events %#v", done, err, evs)
	}
}

func TestReadEventsCut(t *testing.T) {
	for in, want := range map[string][]Event{
		"data: a\n\ndata: b":   {{Data: "a"}, {Data: "b", Cut: true}},
		"data: a\n\ndata: b\n": {{Data: "a"}, {Data: "b", Cut: true}},
		"data: a\n\n":          {{Data: "a"}},
		"":                     nil,
	} {
		evs, done, err := readAll(t, in, 1<<10)
		if err != nil || done || !reflect.DeepEqual(evs, want) {
			t.Errorf("%q: done %v, err %v, events %#v", in, done, err, evs)
		}
	}
}

func TestReadEventsLimits(t *testing.T) {
	if _, _, err := readAll(t, ": "+strings.Repeat("x", 100)+"\n", 50); !errors.Is(err, ErrTooLarge) {
		t.Errorf("long line: %v", err)
	}
	many := strings.Repeat("data: "+strings.Repeat("x", 20)+"\n", 5)
	if _, _, err := readAll(t, many+"\n", 50); !errors.Is(err, ErrTooLarge) {
		t.Errorf("large event: %v", err)
	}
	if evs, _, err := readAll(t, "data: "+strings.Repeat("x", 50)+"\r\n\n", 56); err != nil || len(evs) != 1 {
		t.Errorf("at the limit: %v %v", evs, err)
	}
	boom := errors.New("boom")
	_, err := ReadEvents(iotest.ErrReader(boom), 50, func(Event) (bool, error) { return false, nil })
	if !errors.Is(err, boom) {
		t.Errorf("read error: %v", err)
	}
	stop := errors.New("stop")
	calls := 0
	_, err = ReadEvents(strings.NewReader("data: 1\n\ndata: 2\n\n"), 50, func(Event) (bool, error) { calls++; return false, stop })
	if !errors.Is(err, stop) || calls != 1 {
		t.Errorf("%d calls, then %v", calls, err)
	}
}

func TestMarshalEvent(t *testing.T) {
	content := "<b>\n"
	b, err := MarshalEvent(Chunk{ID: "c", Object: ObjectChunk, Choices: []ChunkChoice{{Delta: Delta{Content: &content}}}})
	want := `data: {"id":"c","object":"chat.completion.chunk","created":0,"model":"","choices":[{"index":0,"delta":{"content":"<b>\n"},"finish_reason":null}]}` + "\n\n"
	if err != nil || string(b) != want {
		t.Fatalf("%q %v", b, err)
	}
	evs, _, err := readAll(t, string(b)+DoneEvent, 1<<10)
	if err != nil || len(evs) != 2 || evs[0].Data+"\n\n" != want[len("data: "):] || !IsDone(evs[1].Data) {
		t.Errorf("read back: %#v %v", evs, err)
	}
	if _, err := MarshalEvent(func() {}); err == nil {
		t.Error("a func marshalled")
	}
}
