package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"sync"
	"time"
)

// Container logs are stored like the CRI does it: one record per line, "<RFC3339Nano> <stream> <F|P> <text>",
// where P marks a partial line (no newline yet, or longer than the buffer).

type logWriter struct {
	mu sync.Mutex
	f  *os.File
}

func newLogWriter(path string) (*logWriter, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	return &logWriter{f: f}, nil
}

func (w *logWriter) record(stream string, text []byte, full bool) {
	tag := "P"
	if full {
		tag = "F"
	}
	var b bytes.Buffer
	b.WriteString(time.Now().UTC().Format(time.RFC3339Nano))
	b.WriteByte(' ')
	b.WriteString(stream)
	b.WriteByte(' ')
	b.WriteString(tag)
	b.WriteByte(' ')
	b.Write(text)
	b.WriteByte('\n')
	w.mu.Lock()
	defer w.mu.Unlock()
	_, _ = w.f.Write(b.Bytes())
}

func (w *logWriter) copyFrom(r io.Reader, stream string) {
	br := bufio.NewReaderSize(r, 16*1024)
	for {
		line, err := br.ReadSlice('\n')
		switch {
		case err == nil:
			w.record(stream, line[:len(line)-1], true)
		case errors.Is(err, bufio.ErrBufferFull):
			w.record(stream, line, false)
		default:
			if len(line) > 0 {
				w.record(stream, line, false)
			}
			return
		}
	}
}

func (w *logWriter) close() {
	w.mu.Lock()
	defer w.mu.Unlock()
	_ = w.f.Close()
}

type logRecord struct {
	ts    time.Time
	tsRaw []byte
	text  []byte
	full  bool
}

func parseRecord(line []byte) (logRecord, bool) {
	line = bytes.TrimSuffix(line, []byte("\n"))
	parts := bytes.SplitN(line, []byte(" "), 4)
	if len(parts) != 4 {
		return logRecord{}, false
	}
	ts, err := time.Parse(time.RFC3339Nano, string(parts[0]))
	if err != nil {
		return logRecord{}, false
	}
	return logRecord{ts: ts, tsRaw: parts[0], text: parts[3], full: string(parts[2]) == "F"}, true
}

func (a *agent) router() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") })
	mux.HandleFunc("GET /containerLogs/{namespace}/{pod}/{container}", a.serveLogs)
	return mux
}

type logOptions struct {
	follow     bool
	timestamps bool
	previous   bool
	tailLines  int64 // -1: all
	limitBytes int64 // -1: unlimited
	since      time.Time
}

func parseLogOptions(r *http.Request) (logOptions, error) {
	q := r.URL.Query()
	o := logOptions{tailLines: -1, limitBytes: -1}
	o.follow, _ = strconv.ParseBool(q.Get("follow"))
	o.timestamps, _ = strconv.ParseBool(q.Get("timestamps"))
	o.previous, _ = strconv.ParseBool(q.Get("previous"))
	if v := q.Get("tailLines"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			return o, fmt.Errorf("invalid tailLines %q", v)
		}
		o.tailLines = n
	}
	if v := q.Get("limitBytes"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n <= 0 {
			return o, fmt.Errorf("invalid limitBytes %q", v)
		}
		o.limitBytes = n
	}
	if v := q.Get("sinceSeconds"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n <= 0 {
			return o, fmt.Errorf("invalid sinceSeconds %q", v)
		}
		o.since = time.Now().Add(-time.Duration(n) * time.Second)
	}
	if v := q.Get("sinceTime"); v != "" {
		t, err := time.Parse(time.RFC3339, v)
		if err != nil {
			return o, fmt.Errorf("invalid sinceTime %q", v)
		}
		o.since = t
	}
	return o, nil
}

// serveLogs implements the kubelet's /containerLogs endpoint that the API server proxies pods/log to.
func (a *agent) serveLogs(w http.ResponseWriter, r *http.Request) {
	ns, podName, container := r.PathValue("namespace"), r.PathValue("pod"), r.PathValue("container")
	opts, err := parseLogOptions(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	rt := a.lookup(ns, podName)
	if rt == nil {
		http.Error(w, fmt.Sprintf("pod %s/%s not found on node %s", ns, podName, a.nodeName), http.StatusNotFound)
		return
	}
	rt.mu.Lock()
	atts := rt.attempts[container]
	rt.mu.Unlock()
	idx := len(atts) - 1
	if opts.previous {
		idx--
	}
	if idx < 0 {
		if opts.previous {
			http.Error(w, fmt.Sprintf("previous terminated container %q in pod %q not found", container, podName), http.StatusBadRequest)
		} else {
			http.Error(w, fmt.Sprintf("container %q in pod %q is waiting to start: ContainerCreating", container, podName), http.StatusBadRequest)
		}
		return
	}
	att := atts[idx]
	w.Header().Set("Content-Type", "text/plain")
	if err := streamLog(r.Context(), w, att, opts); err != nil && r.Context().Err() == nil {
		logf("node: logs %s/%s/%s: %v", ns, podName, container, err)
	}
}

// limitedWriter stops after n bytes (limitBytes) and flushes after every write so `follow` is live.
type limitedWriter struct {
	w       io.Writer
	flusher http.Flusher
	left    int64 // -1: unlimited
}

var errLimitReached = errors.New("limitBytes reached")

func (l *limitedWriter) Write(p []byte) (int, error) {
	if l.left == 0 {
		return 0, errLimitReached
	}
	if l.left > 0 && int64(len(p)) > l.left {
		p = p[:l.left]
	}
	n, err := l.w.Write(p)
	if l.left > 0 {
		l.left -= int64(n)
	}
	if l.flusher != nil {
		l.flusher.Flush()
	}
	if err == nil && l.left == 0 {
		err = errLimitReached
	}
	return n, err
}

func streamLog(ctx context.Context, w http.ResponseWriter, att *attempt, o logOptions) error {
	f, err := os.Open(att.logPath)
	if err != nil {
		return err
	}
	defer f.Close()
	out := &limitedWriter{w: w, left: o.limitBytes}
	out.flusher, _ = w.(http.Flusher)

	if o.tailLines >= 0 {
		off, err := tailOffset(f, o.tailLines)
		if err != nil {
			return err
		}
		if _, err := f.Seek(off, io.SeekStart); err != nil {
			return err
		}
	}
	br := bufio.NewReader(f)
	var pending []byte
	for {
		chunk, err := br.ReadBytes('\n')
		pending = append(pending, chunk...)
		if err == nil {
			if rec, ok := parseRecord(pending); ok && !rec.ts.Before(o.since) {
				var line []byte
				if o.timestamps {
					line = append(append(line, rec.tsRaw...), ' ')
				}
				line = append(line, rec.text...)
				if rec.full {
					line = append(line, '\n')
				}
				if _, werr := out.Write(line); werr != nil {
					if errors.Is(werr, errLimitReached) {
						return nil
					}
					return werr
				}
			}
			pending = pending[:0]
			continue
		}
		if !errors.Is(err, io.EOF) {
			return err
		}
		// At the end of what has been written so far.
		if !o.follow {
			return nil
		}
		select {
		case <-att.done:
			// The writer has finished; one more pass picks up anything written after our last read.
			rest, _ := io.ReadAll(br)
			if len(rest) == 0 {
				return nil
			}
			br = bufio.NewReader(io.MultiReader(bytes.NewReader(rest)))
			o.follow = false
		case <-ctx.Done():
			return nil
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// tailOffset returns the file offset of the n-th last record.
func tailOffset(f *os.File, n int64) (int64, error) {
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return 0, err
	}
	if n == 0 {
		return f.Seek(0, io.SeekEnd)
	}
	ring := make([]int64, n)
	var count, off int64
	br := bufio.NewReader(f)
	for {
		line, err := br.ReadBytes('\n')
		if len(line) > 0 && line[len(line)-1] == '\n' {
			ring[count%n] = off
			count++
		}
		off += int64(len(line))
		if err != nil {
			break
		}
	}
	if count <= n {
		return 0, nil
	}
	return ring[count%n], nil
}
