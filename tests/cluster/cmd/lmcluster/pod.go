package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/util/retry"
)

// podRuntime runs one pod: volumes, init containers in order, then all containers, each as a process group
// in its own mount namespace, and mirrors what happens into the pod's status.
type podRuntime struct {
	a   *agent
	pod *corev1.Pod // the spec as first seen; a pod's containers and volumes are immutable
	dir string

	mu             sync.Mutex
	phase          corev1.PodPhase
	reason         string
	message        string
	startTime      metav1.Time
	sandboxReady   bool
	initialized    bool
	initStatuses   []corev1.ContainerStatus
	statuses       []corev1.ContainerStatus
	procs          map[string]*os.Process
	attempts       map[string][]*attempt
	volumePaths    map[string]string
	killed         bool
	killCh         chan struct{}
	deletionOnce   sync.Once
	stopped        chan struct{}
	statusMu       sync.Mutex // serialises status writes so they reach the API server in order
	lastPushedJSON string
}

// attempt is one run of a container: its log file and whether it is still being written.
type attempt struct {
	logPath string
	done    chan struct{}
}

func newPodRuntime(a *agent, pod *corev1.Pod) *podRuntime {
	r := &podRuntime{
		a:         a,
		pod:       pod.DeepCopy(),
		dir:       podDir(a.stateDir, pod.UID),
		phase:     corev1.PodPending,
		startTime: metav1.Now(),
		procs:     map[string]*os.Process{},
		attempts:  map[string][]*attempt{},
		killCh:    make(chan struct{}),
		stopped:   make(chan struct{}),
	}
	waiting := func(c corev1.Container) corev1.ContainerStatus {
		return corev1.ContainerStatus{
			Name:  c.Name,
			Image: c.Image,
			State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ContainerCreating"}},
		}
	}
	for _, c := range pod.Spec.InitContainers {
		st := waiting(c)
		st.State.Waiting.Reason = "PodInitializing"
		r.initStatuses = append(r.initStatuses, st)
	}
	for _, c := range pod.Spec.Containers {
		st := waiting(c)
		if len(pod.Spec.InitContainers) > 0 {
			st.State.Waiting.Reason = "PodInitializing"
		}
		r.statuses = append(r.statuses, st)
	}
	return r
}

func (r *podRuntime) isKilled() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.killed
}

func (r *podRuntime) run(ctx context.Context) {
	defer close(r.stopped)
	logf("pod %s/%s (%s): starting", r.pod.Namespace, r.pod.Name, r.pod.UID)
	r.pushStatus(ctx)

	// Volumes and env can depend on objects that appear later (or on the Node authorizer's graph catching up),
	// so, like the kubelet, keep trying and say why in the container's waiting state.
	envs := map[string][]string{}
	for {
		err := r.setupVolumes(ctx)
		if err == nil {
			for _, c := range append(append([]corev1.Container{}, r.pod.Spec.InitContainers...), r.pod.Spec.Containers...) {
				var env []string
				if env, err = r.containerEnv(ctx, &c); err != nil {
					break
				}
				envs[c.Name] = env
			}
		}
		if err == nil {
			break
		}
		var unsupported *unsupportedError
		if errors.As(err, &unsupported) {
			r.mu.Lock()
			r.phase, r.reason, r.message = corev1.PodFailed, "UnsupportedVolume", err.Error()
			r.mu.Unlock()
			r.pushStatus(ctx)
			return
		}
		r.setWaitingMessage("CreateContainerConfigError", err.Error())
		r.pushStatus(ctx)
		select {
		case <-r.killCh:
			r.finishKilled(ctx)
			return
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
	r.mu.Lock()
	r.sandboxReady = true
	r.mu.Unlock()

	policy := r.pod.Spec.RestartPolicy
	for i := range r.pod.Spec.InitContainers {
		c := &r.pod.Spec.InitContainers[i]
		for {
			code, ok := r.runContainer(ctx, c, envs[c.Name], &r.initStatuses[i], true)
			if !ok || r.isKilled() {
				r.finishKilled(ctx)
				return
			}
			if code == 0 {
				break
			}
			if policy == corev1.RestartPolicyNever {
				r.mu.Lock()
				r.phase = corev1.PodFailed
				r.mu.Unlock()
				r.pushStatus(ctx)
				return
			}
			if !r.backoff(ctx, r.initStatuses[i].RestartCount) {
				r.finishKilled(ctx)
				return
			}
		}
	}
	r.mu.Lock()
	r.initialized = true
	r.phase = corev1.PodRunning
	for i := range r.statuses {
		if w := r.statuses[i].State.Waiting; w != nil && w.Reason == "PodInitializing" {
			w.Reason = "ContainerCreating"
		}
	}
	r.mu.Unlock()

	var wg sync.WaitGroup
	for i := range r.pod.Spec.Containers {
		c := &r.pod.Spec.Containers[i]
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				code, ok := r.runContainer(ctx, c, envs[c.Name], &r.statuses[i], false)
				if !ok || r.isKilled() {
					return
				}
				restart := policy == corev1.RestartPolicyAlways || (policy == corev1.RestartPolicyOnFailure && code != 0)
				if !restart || !r.backoff(ctx, r.statuses[i].RestartCount) {
					return
				}
			}
		}()
	}
	wg.Wait()

	r.mu.Lock()
	r.phase = corev1.PodSucceeded
	for _, st := range r.statuses {
		if t := st.State.Terminated; t == nil || t.ExitCode != 0 {
			r.phase = corev1.PodFailed
		}
	}
	r.mu.Unlock()
	logf("pod %s/%s: %s", r.pod.Namespace, r.pod.Name, r.phase)
	r.pushStatus(ctx)
}

// finishKilled gives a pod that was deleted before or while starting a terminal status.
func (r *podRuntime) finishKilled(ctx context.Context) {
	r.mu.Lock()
	r.phase = corev1.PodFailed
	for _, sts := range [][]corev1.ContainerStatus{r.initStatuses, r.statuses} {
		for i := range sts {
			if sts[i].State.Terminated == nil {
				sts[i].State = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
					ExitCode: 137, Reason: "ContainerStatusUnknown", Message: "the pod was deleted before the container finished",
					FinishedAt: metav1.Now(),
				}}
			}
		}
	}
	r.mu.Unlock()
	r.pushStatus(ctx)
}

// backoff waits before a restart; false if the pod was killed meanwhile.
func (r *podRuntime) backoff(ctx context.Context, restarts int32) bool {
	d := time.Second << min(restarts, 5)
	select {
	case <-r.killCh:
		return false
	case <-ctx.Done():
		return false
	case <-time.After(d):
		return true
	}
}

func (r *podRuntime) setWaitingMessage(reason, msg string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, sts := range [][]corev1.ContainerStatus{r.initStatuses, r.statuses} {
		for i := range sts {
			if w := sts[i].State.Waiting; w != nil {
				w.Reason, w.Message = reason, msg
			}
		}
	}
}

// runContainer runs one attempt of a container and waits for it. ok is false when it never started because
// the pod is being killed.
func (r *podRuntime) runContainer(ctx context.Context, c *corev1.Container, env []string, st *corev1.ContainerStatus, isInit bool) (code int, ok bool) {
	r.mu.Lock()
	if r.killed {
		r.mu.Unlock()
		return 0, false
	}
	n := len(r.attempts[c.Name])
	logDir := filepath.Join(r.dir, "logs", c.Name)
	att := &attempt{logPath: filepath.Join(logDir, strconv.Itoa(n)+".log"), done: make(chan struct{})}
	r.mu.Unlock()

	containerID := fmt.Sprintf("lmcluster://%s/%s/%d", r.pod.UID, c.Name, n)
	fail := func(reason string, err error) (int, bool) {
		logf("pod %s/%s container %s: %s: %v", r.pod.Namespace, r.pod.Name, c.Name, reason, err)
		r.mu.Lock()
		now := metav1.Now()
		r.recordTermination(st, corev1.ContainerStateTerminated{ExitCode: 128, Reason: reason, Message: err.Error(), StartedAt: now, FinishedAt: now, ContainerID: containerID})
		r.mu.Unlock()
		r.pushStatus(ctx)
		return 128, true
	}

	spec, err := r.buildSpec(c, env)
	if err != nil {
		return fail("CreateContainerConfigError", err)
	}
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		return fail("StartError", err)
	}
	specPath := filepath.Join(r.dir, "specs", fmt.Sprintf("%s-%d.json", c.Name, n))
	if err := writeJSON(specPath, spec); err != nil {
		return fail("StartError", err)
	}
	lw, err := newLogWriter(att.logPath)
	if err != nil {
		return fail("StartError", err)
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		lw.close()
		return fail("StartError", err)
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		outR.Close()
		outW.Close()
		lw.close()
		return fail("StartError", err)
	}
	self, err := os.Executable()
	if err != nil {
		return fail("StartError", err)
	}
	cmd := exec.Command(self, "container-init", specPath)
	cmd.Env = []string{"PATH=/usr/bin:/bin"}
	cmd.Dir = "/"
	cmd.Stdin = nil
	cmd.Stdout, cmd.Stderr = outW, errW
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Setpgid:    true,                // the container is a process group: deletion kills its children too
		Pdeathsig:  syscall.SIGKILL,     // and nothing outlives the agent
		Cloneflags: syscall.CLONE_NEWNS, // volumes are bind-mounted where the pod expects them, for this process only
	}

	r.mu.Lock()
	if r.killed {
		r.mu.Unlock()
		outR.Close()
		outW.Close()
		errR.Close()
		errW.Close()
		lw.close()
		return 0, false
	}
	err = cmd.Start()
	outW.Close()
	errW.Close()
	if err != nil {
		r.mu.Unlock()
		outR.Close()
		errR.Close()
		lw.close()
		return fail("StartError", err)
	}
	pid := cmd.Process.Pid
	r.procs[c.Name] = cmd.Process
	r.attempts[c.Name] = append(r.attempts[c.Name], att)
	started := metav1.Now()
	t := true
	if st.State.Terminated != nil { // a restart
		st.LastTerminationState = corev1.ContainerState{Terminated: st.State.Terminated}
		st.RestartCount++
	}
	st.State = corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: started}}
	st.ContainerID = containerID
	st.ImageID = "lmcluster://" + c.Image
	st.Started = &t
	st.Ready = !isInit
	r.mu.Unlock()
	_ = os.WriteFile(filepath.Join(r.dir, "pids", c.Name+".pid"), []byte(fmt.Sprintf("%d %s\n", pid, procStartTime(pid))), 0o644)
	logf("pod %s/%s container %s: started pid %d: %q", r.pod.Namespace, r.pod.Name, c.Name, pid, spec.Argv)
	r.pushStatus(ctx)

	var copiers sync.WaitGroup
	copiers.Add(2)
	go func() { defer copiers.Done(); lw.copyFrom(outR, "stdout") }()
	go func() { defer copiers.Done(); lw.copyFrom(errR, "stderr") }()

	waitErr := cmd.Wait()
	// Like a container runtime, the container ends with its main process: background children die too.
	_ = syscall.Kill(-pid, syscall.SIGKILL)
	copiers.Wait()
	outR.Close()
	errR.Close()
	lw.close()
	close(att.done)
	_ = os.Remove(filepath.Join(r.dir, "pids", c.Name+".pid"))

	code = 0
	if waitErr != nil {
		var ee *exec.ExitError
		if !errors.As(waitErr, &ee) {
			code = 128
		} else if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			code = 128 + int(ws.Signal())
		} else {
			code = ee.ExitCode()
		}
	}
	reason := "Completed"
	if code != 0 {
		reason = "Error"
	}
	r.mu.Lock()
	delete(r.procs, c.Name)
	r.recordTermination(st, corev1.ContainerStateTerminated{
		ExitCode: int32(code), Reason: reason, StartedAt: started, FinishedAt: metav1.Now(), ContainerID: containerID,
	})
	r.mu.Unlock()
	logf("pod %s/%s container %s: exited %d", r.pod.Namespace, r.pod.Name, c.Name, code)
	if !r.isKilled() {
		r.pushStatus(ctx)
	}
	return code, true
}

// recordTermination must be called with r.mu held.
func (r *podRuntime) recordTermination(st *corev1.ContainerStatus, term corev1.ContainerStateTerminated) {
	if st.State.Terminated != nil {
		st.LastTerminationState = corev1.ContainerState{Terminated: st.State.Terminated}
		st.RestartCount++
	}
	f := false
	st.State = corev1.ContainerState{Terminated: &term}
	st.Ready = false
	st.Started = &f
	if st.ContainerID == "" {
		st.ContainerID = term.ContainerID
	}
}

// buildSpec turns a container into what container-init needs: argv with $(VAR) references expanded, the env,
// and bind mounts for its volumeMounts.
func (r *podRuntime) buildSpec(c *corev1.Container, env []string) (*containerSpec, error) {
	spec := &containerSpec{Env: env, WorkingDir: c.WorkingDir}
	spec.Argv = expandArgs(c.Command, c.Args, env)
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, vm := range c.VolumeMounts {
		src, ok := r.volumePaths[vm.Name]
		if !ok {
			return nil, fmt.Errorf("volumeMount %q refers to an unknown volume", vm.Name)
		}
		if vm.SubPath != "" {
			src = filepath.Join(src, vm.SubPath)
			if _, err := os.Stat(src); os.IsNotExist(err) {
				if err := os.MkdirAll(src, 0o755); err != nil {
					return nil, err
				}
			}
		}
		spec.Mounts = append(spec.Mounts, mount{Source: src, Target: vm.MountPath, ReadOnly: vm.ReadOnly || r.readOnlyVolume(vm.Name)})
	}
	return spec, nil
}

func (r *podRuntime) readOnlyVolume(name string) bool {
	for _, v := range r.pod.Spec.Volumes {
		if v.Name == name {
			return v.ConfigMap != nil || v.Secret != nil || v.Projected != nil || v.DownwardAPI != nil
		}
	}
	return false
}

// requestDeletion reacts to a deletionTimestamp: stop the containers within the grace period, then remove the pod.
func (r *podRuntime) requestDeletion(ctx context.Context, pod *corev1.Pod) {
	r.deletionOnce.Do(func() {
		grace := 30 * time.Second
		if pod.DeletionGracePeriodSeconds != nil {
			grace = time.Duration(*pod.DeletionGracePeriodSeconds) * time.Second
		}
		logf("pod %s/%s: deletion requested (grace %s)", pod.Namespace, pod.Name, grace)
		r.kill(grace)
		go func() {
			select {
			case <-r.stopped:
			case <-ctx.Done():
				return
			}
			r.a.finalizeDeletion(ctx, pod)
		}()
	})
}

// kill sends SIGTERM to every container's process group, and SIGKILL after grace.
func (r *podRuntime) kill(grace time.Duration) {
	r.mu.Lock()
	if !r.killed {
		r.killed = true
		close(r.killCh)
	}
	procs := make([]*os.Process, 0, len(r.procs))
	for _, p := range r.procs {
		procs = append(procs, p)
	}
	r.mu.Unlock()
	sig := syscall.SIGTERM
	if grace <= 0 {
		sig = syscall.SIGKILL
	}
	for _, p := range procs {
		_ = syscall.Kill(-p.Pid, sig)
	}
	if sig == syscall.SIGKILL {
		return
	}
	go func() {
		select {
		case <-r.stopped:
			return
		case <-time.After(grace):
		}
		r.mu.Lock()
		defer r.mu.Unlock()
		for _, p := range r.procs {
			_ = syscall.Kill(-p.Pid, syscall.SIGKILL)
		}
	}()
}

func (r *podRuntime) waitStopped(d time.Duration) {
	select {
	case <-r.stopped:
	case <-time.After(d):
	}
}

// pushStatus writes the runtime's view into the pod's status, keeping the fields other components own.
func (r *podRuntime) pushStatus(ctx context.Context) {
	r.statusMu.Lock()
	defer r.statusMu.Unlock()
	status := r.snapshot()
	raw, _ := json.Marshal(status)
	if string(raw) == r.lastPushedJSON {
		return
	}
	pods := r.a.client.CoreV1().Pods(r.pod.Namespace)
	// Conflicts are normal (the job controller edits finalizers); other errors (an API server restart, the
	// Node authorizer's graph lagging behind a new pod) are retried for a while too, since a lost final
	// status would leave the pod Running forever.
	backoff := wait.Backoff{Steps: 12, Duration: 50 * time.Millisecond, Factor: 2, Cap: 2 * time.Second}
	err := retry.OnError(backoff, func(err error) bool { return !apierrors.IsNotFound(err) && ctx.Err() == nil }, func() error {
		cur, err := pods.Get(ctx, r.pod.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if cur.UID != r.pod.UID {
			return nil
		}
		if cur.Status.Phase == corev1.PodSucceeded || cur.Status.Phase == corev1.PodFailed {
			return nil // terminal phases are final
		}
		mergeStatus(&cur.Status, status)
		_, err = pods.UpdateStatus(ctx, cur, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		if !apierrors.IsNotFound(err) && ctx.Err() == nil {
			logf("pod %s/%s: update status: %v", r.pod.Namespace, r.pod.Name, err)
		}
		return
	}
	r.lastPushedJSON = string(raw)
}

func (r *podRuntime) snapshot() corev1.PodStatus {
	r.mu.Lock()
	defer r.mu.Unlock()
	cond := func(t corev1.PodConditionType, ok bool, reason string) corev1.PodCondition {
		s := corev1.ConditionFalse
		if ok {
			s = corev1.ConditionTrue
		}
		return corev1.PodCondition{Type: t, Status: s, Reason: reason}
	}
	allReady := len(r.statuses) > 0
	for _, st := range r.statuses {
		allReady = allReady && st.Ready
	}
	terminal := r.phase == corev1.PodSucceeded || r.phase == corev1.PodFailed
	readyReason := ""
	if terminal {
		readyReason = "PodCompleted"
	} else if !allReady {
		readyReason = "ContainersNotReady"
	}
	initialized := r.initialized || len(r.pod.Spec.InitContainers) == 0
	s := corev1.PodStatus{
		Phase:   r.phase,
		Reason:  r.reason,
		Message: r.message,
		HostIP:  "127.0.0.1",
		HostIPs: []corev1.HostIP{{IP: "127.0.0.1"}},
		PodIP:   "127.0.0.1",
		PodIPs:  []corev1.PodIP{{IP: "127.0.0.1"}},
		Conditions: []corev1.PodCondition{
			cond(corev1.PodReadyToStartContainers, r.sandboxReady, ""),
			cond(corev1.PodInitialized, initialized, ""),
			cond(corev1.ContainersReady, allReady && !terminal, readyReason),
			cond(corev1.PodReady, allReady && !terminal, readyReason),
		},
		StartTime:             &r.startTime,
		InitContainerStatuses: deepCopyStatuses(r.initStatuses),
		ContainerStatuses:     deepCopyStatuses(r.statuses),
	}
	return s
}

func deepCopyStatuses(in []corev1.ContainerStatus) []corev1.ContainerStatus {
	if in == nil {
		return nil
	}
	out := make([]corev1.ContainerStatus, len(in))
	for i := range in {
		in[i].DeepCopyInto(&out[i])
	}
	return out
}

// mergeStatus copies the agent-owned fields into cur, keeping conditions set by others (PodScheduled,
// DisruptionTarget, …) and preserving transition times of unchanged conditions.
func mergeStatus(cur *corev1.PodStatus, mine corev1.PodStatus) {
	now := metav1.Now()
	for _, c := range mine.Conditions {
		found := false
		for i := range cur.Conditions {
			if cur.Conditions[i].Type == c.Type {
				found = true
				if cur.Conditions[i].Status != c.Status {
					cur.Conditions[i].LastTransitionTime = now
				}
				cur.Conditions[i].Status, cur.Conditions[i].Reason = c.Status, c.Reason
			}
		}
		if !found {
			c.LastTransitionTime = now
			cur.Conditions = append(cur.Conditions, c)
		}
	}
	cur.Phase, cur.Reason, cur.Message = mine.Phase, mine.Reason, mine.Message
	cur.HostIP, cur.HostIPs, cur.PodIP, cur.PodIPs = mine.HostIP, mine.HostIPs, mine.PodIP, mine.PodIPs
	if cur.StartTime == nil {
		cur.StartTime = mine.StartTime
	}
	cur.InitContainerStatuses = mine.InitContainerStatuses
	cur.ContainerStatuses = mine.ContainerStatuses
}

func writeJSON(path string, v any) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o600)
}
