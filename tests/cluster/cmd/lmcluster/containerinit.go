package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// containerSpec is what the node agent hands to `lmcluster container-init` (as a JSON file): the process to run
// and the bind mounts that make the pod's volumes visible at their mountPath.
type containerSpec struct {
	Argv       []string `json:"argv"`
	Env        []string `json:"env"`
	WorkingDir string   `json:"workingDir,omitempty"`
	Mounts     []mount  `json:"mounts,omitempty"`
}

type mount struct {
	Source   string `json:"source"`
	Target   string `json:"target"`
	ReadOnly bool   `json:"readOnly,omitempty"`
}

// runContainerInit runs inside a fresh mount namespace (the agent starts it with CLONE_NEWNS). It makes the
// namespace private so nothing leaks to the host, bind-mounts the volumes, and replaces itself with the
// container's command, so the container's PID is this process's PID.
func runContainerInit(args []string) int {
	if len(args) != 1 {
		fmt.Fprintln(os.Stderr, "usage: lmcluster container-init SPEC.json")
		return 2
	}
	fail := func(format string, a ...any) int {
		// Goes to the container's log, where a test author looks first.
		fmt.Fprintf(os.Stderr, "lmcluster container-init: "+format+"\n", a...)
		return 128
	}
	raw, err := os.ReadFile(args[0])
	if err != nil {
		return fail("read spec: %v", err)
	}
	var spec containerSpec
	if err := json.Unmarshal(raw, &spec); err != nil {
		return fail("parse spec: %v", err)
	}
	if len(spec.Mounts) > 0 {
		if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
			return fail("make / private in the container's mount namespace: %v", err)
		}
	}
	for _, m := range spec.Mounts {
		if err := bindMount(m); err != nil {
			return fail("mount %s at %s: %v", m.Source, m.Target, err)
		}
	}
	if spec.WorkingDir != "" {
		if err := os.MkdirAll(spec.WorkingDir, 0o755); err != nil {
			return fail("create workingDir: %v", err)
		}
		if err := os.Chdir(spec.WorkingDir); err != nil {
			return fail("chdir to workingDir: %v", err)
		}
	}
	if len(spec.Argv) == 0 {
		return fail("the container has no command: images are not pulled, so `command` must be set")
	}
	path, err := lookPath(spec.Argv[0], spec.Env)
	if err != nil {
		fmt.Fprintf(os.Stderr, "lmcluster container-init: %v\n", err)
		return 127
	}
	err = unix.Exec(path, spec.Argv, spec.Env)
	return fail("exec %s: %v", path, err)
}

func bindMount(m mount) error {
	st, err := os.Stat(m.Source)
	if err != nil {
		return err
	}
	if st.IsDir() {
		if err := os.MkdirAll(m.Target, 0o755); err != nil {
			return err
		}
	} else {
		if err := os.MkdirAll(filepath.Dir(m.Target), 0o755); err != nil {
			return err
		}
		if _, err := os.Stat(m.Target); os.IsNotExist(err) {
			f, err := os.OpenFile(m.Target, os.O_CREATE|os.O_WRONLY, 0o644)
			if err != nil {
				return err
			}
			f.Close()
		}
	}
	if err := unix.Mount(m.Source, m.Target, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return err
	}
	if m.ReadOnly {
		if err := unix.Mount("", m.Target, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("remount read-only: %w", err)
		}
	}
	return nil
}

// lookPath resolves a command against the PATH of the container's environment (not the agent's).
func lookPath(name string, env []string) (string, error) {
	if strings.Contains(name, "/") {
		return name, nil
	}
	path := ""
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "PATH="); ok {
			path = v
		}
	}
	for _, dir := range filepath.SplitList(path) {
		if dir == "" {
			dir = "."
		}
		p := filepath.Join(dir, name)
		if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("executable %q not found in PATH=%s", name, path)
}
