package build

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"strata/builder/element"
	"strata/builder/manifest"
)

// reporter prints progress while the build runs and DIB's timing table at
// the end. Everything goes to the console and the build log.
type reporter struct {
	out  io.Writer
	log  io.Writer
	n, i int
}

// newReporter writes to the console as is and to the log (and extra, the
// --logfile, when not nil) with each line stamped with the seconds since
// the build started, as DIB's outfilter does. A console that stops
// reading (a closed pipe) is dropped; the build and its log go on.
func newReporter(console, log, extra io.Writer) *reporter {
	if extra != nil {
		log = io.MultiWriter(log, &dropOnError{w: extra})
	}
	stamped := &stampWriter{w: log, start: time.Now(), bol: true}
	return &reporter{out: io.MultiWriter(&dropOnError{w: console}, stamped), log: stamped}
}

// dropOnError passes writes on until one fails, then discards the rest.
type dropOnError struct {
	mu   sync.Mutex
	w    io.Writer
	dead bool
}

func (d *dropOnError) Write(p []byte) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.dead {
		if _, err := d.w.Write(p); err != nil {
			d.dead = true
		}
	}
	return len(p), nil
}

// stampWriter prefixes every line with the elapsed time.
type stampWriter struct {
	mu    sync.Mutex
	w     io.Writer
	start time.Time
	bol   bool
}

func (s *stampWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var b []byte
	for _, c := range p {
		if s.bol {
			b = fmt.Appendf(b, "[%8.2f] ", time.Since(s.start).Seconds())
			s.bol = false
		}
		b = append(b, c)
		if c == '\n' {
			s.bol = true
		}
	}
	if _, err := s.w.Write(b); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (r *reporter) printf(format string, args ...any) { fmt.Fprintf(r.out, format, args...) }

func (r *reporter) phase(p element.Phase, hooks, cached int) {
	extra := ""
	if cached > 0 {
		extra = fmt.Sprintf(" (%d more from the cache)", cached)
	}
	r.printf("==> %s [phase %d/%d] %d hook(s)%s\n", p, p.Index()+1, len(element.Phases), hooks, extra)
}

func (r *reporter) hookStart(h element.Hook, where string) {
	r.printf("--> %s (%s) in %s\n", h.Path(), h.Element, where)
}

func (r *reporter) hookDone(h element.Hook, secs float64) {
	r.printf("<-- %s done in %.1fs\n", h.Path(), secs)
}

// table prints every hook's seconds and status, phase by phase, like
// dib-run-parts' PROFILING block.
func (r *reporter) table(hooks []manifest.Hook, total time.Duration) {
	if len(hooks) == 0 {
		return
	}
	var b strings.Builder
	fmt.Fprintf(&b, "----------------------- PROFILING -----------------------\n")
	fmt.Fprintf(&b, "%-42s %-18s %9s  %s\n", "Hook", "Element", "Seconds", "Status")
	phase := ""
	var phaseSum float64
	flush := func() {
		if phase != "" {
			fmt.Fprintf(&b, "%-42s %-18s %9.3f\n", "  "+phase+" total", "", phaseSum)
		}
	}
	for _, h := range hooks {
		if h.Phase != phase {
			flush()
			phase, phaseSum = h.Phase, 0
		}
		phaseSum += h.Seconds
		status := h.Status
		if h.Status == "failed" {
			status = fmt.Sprintf("failed (exit %d)", h.ExitCode)
		}
		fmt.Fprintf(&b, "%-42s %-18s %9.3f  %s\n", h.Phase+"/"+h.Name, h.Element, h.Seconds, status)
	}
	flush()
	fmt.Fprintf(&b, "%-42s %-18s %9.3f\n", "Build total (wall clock)", "", total.Seconds())
	fmt.Fprintf(&b, "--------------------- END PROFILING ---------------------\n")
	r.printf("%s", b.String())
}
