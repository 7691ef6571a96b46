package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"k8s.io/component-base/version"
)

// k8sVersion is the release the binary was built from (set by -ldflags, see scripts/cluster).
var k8sVersion = version.Get().GitVersion

func durationFromEnv(key, def string) time.Duration {
	v := os.Getenv(key)
	if v == "" {
		v = def
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s=%q is not a duration: %v\n", key, v, err)
		os.Exit(2)
	}
	return d
}

// procStat returns the fields of /proc/PID/stat after the command name, or nil.
func procStat(pid int) []string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return nil
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return nil
	}
	return strings.Fields(s[i+1:])
}

// procStartTime is the process start time in clock ticks since boot (field 22 of /proc/PID/stat): together
// with the PID it identifies a process, so a recycled PID is never mistaken for ours.
func procStartTime(pid int) string {
	f := procStat(pid)
	if len(f) < 20 {
		return ""
	}
	return f[19]
}

// procState is the one-letter state (R, S, Z, …) or "" if the process does not exist.
func procState(pid int) string {
	f := procStat(pid)
	if len(f) < 1 {
		return ""
	}
	return f[0]
}
