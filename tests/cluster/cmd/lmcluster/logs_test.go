package main

import (
	"context"
	"io"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// writeLog runs a logWriter over the given stdout text, as the agent does for a container's pipe.
func writeLog(t *testing.T, stdout string) *attempt {
	t.Helper()
	path := filepath.Join(t.TempDir(), "0.log")
	w, err := newLogWriter(path)
	if err != nil {
		t.Fatal(err)
	}
	w.copyFrom(strings.NewReader(stdout), "stdout")
	w.close()
	done := make(chan struct{})
	close(done)
	return &attempt{logPath: path, done: done}
}

func serve(t *testing.T, att *attempt, o logOptions) string {
	t.Helper()
	rec := httptest.NewRecorder()
	if err := streamLog(context.Background(), rec, att, o); err != nil {
		t.Fatal(err)
	}
	return rec.Body.String()
}

func TestStreamLogOptions(t *testing.T) {
	all := logOptions{tailLines: -1, limitBytes: -1}
	att := writeLog(t, "one\ntwo\nthree\nno newline")
	cases := []struct {
		name string
		opts func(o logOptions) logOptions
		want string
	}{
		{"everything, last line partial", func(o logOptions) logOptions { return o }, "one\ntwo\nthree\nno newline"},
		{"tailLines=2", func(o logOptions) logOptions { o.tailLines = 2; return o }, "three\nno newline"},
		{"tailLines=0", func(o logOptions) logOptions { o.tailLines = 0; return o }, ""},
		{"tailLines beyond the log", func(o logOptions) logOptions { o.tailLines = 10; return o }, "one\ntwo\nthree\nno newline"},
		{"limitBytes=6", func(o logOptions) logOptions { o.limitBytes = 6; return o }, "one\ntw"},
		{"since the future", func(o logOptions) logOptions { o.since = time.Now().Add(time.Hour); return o }, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := serve(t, att, tc.opts(all)); got != tc.want {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
		})
	}
	ts := serve(t, att, logOptions{tailLines: 1, limitBytes: -1, timestamps: true})
	stamp, text, _ := strings.Cut(ts, " ")
	if _, err := time.Parse(time.RFC3339Nano, stamp); err != nil || text != "no newline" {
		t.Fatalf("timestamps: %q (%v)", ts, err)
	}
}

// follow returns what is written while the container runs and ends when it has finished.
func TestStreamLogFollow(t *testing.T) {
	path := filepath.Join(t.TempDir(), "0.log")
	w, err := newLogWriter(path)
	if err != nil {
		t.Fatal(err)
	}
	att := &attempt{logPath: path, done: make(chan struct{})}
	pr, pw := io.Pipe()
	go func() {
		w.copyFrom(pr, "stdout")
		w.close()
		close(att.done)
	}()
	body := &syncBuffer{ch: make(chan string, 10)}
	finished := make(chan error, 1)
	go func() {
		finished <- streamLog(context.Background(), body, att, logOptions{follow: true, tailLines: -1, limitBytes: -1})
	}()

	_, _ = io.WriteString(pw, "first\n")
	select {
	case got := <-body.ch:
		if got != "first\n" {
			t.Fatalf("first write: %q", got)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("follow did not deliver the first line while the writer was still open")
	}
	_, _ = io.WriteString(pw, "second\n")
	pw.Close()
	select {
	case err := <-finished:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("follow did not end after the container finished")
	}
	if got := <-body.ch; got != "second\n" {
		t.Fatalf("second write: %q", got)
	}
}

// syncBuffer is an http.ResponseWriter that hands every write to a channel.
type syncBuffer struct {
	httptest.ResponseRecorder
	ch chan string
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.ch <- string(p)
	return len(p), nil
}
