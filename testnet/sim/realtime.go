package sim

import (
	"syscall"
	"time"
)

// realNow reads the machine's clock, which synctest's virtual clock does not
// replace: the simulation's own cost is measured with it.
func realNow() time.Time {
	var tv syscall.Timeval
	if err := syscall.Gettimeofday(&tv); err != nil {
		return time.Time{}
	}
	return time.Unix(tv.Sec, tv.Usec*1000)
}

func realSince(t time.Time) time.Duration { return realNow().Sub(t).Round(time.Millisecond) }
