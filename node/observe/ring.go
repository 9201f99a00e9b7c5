package observe

// ring keeps the last max values pushed. Its storage grows as values come,
// up to max, so that a quiet ring costs little.
type ring[T any] struct {
	max  int
	buf  []T
	next int // where the next value goes once buf is full
}

func newRing[T any](max int) *ring[T] { return &ring[T]{max: max} }

func (r *ring[T]) push(v T) {
	if len(r.buf) < r.max {
		r.buf = append(r.buf, v)
		return
	}
	r.buf[r.next] = v
	r.next = (r.next + 1) % r.max
}

func (r *ring[T]) len() int { return len(r.buf) }

// oldestFirst copies the values out, oldest first.
func (r *ring[T]) oldestFirst() []T {
	out := make([]T, 0, len(r.buf))
	out = append(out, r.buf[r.next:]...)
	return append(out, r.buf[:r.next]...)
}

// newestFirst copies out the n newest values, newest first.
func (r *ring[T]) newestFirst(n int) []T {
	n = min(n, len(r.buf))
	out := make([]T, 0, max(n, 0))
	for i := range n {
		j := (r.next - 1 - i + 2*len(r.buf)) % len(r.buf)
		out = append(out, r.buf[j])
	}
	return out
}
