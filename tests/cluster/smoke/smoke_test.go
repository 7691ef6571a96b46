//go:build clustersmoke

// Package smoke is the cluster's acceptance test. It runs against a cluster started by `scripts/cluster up`
// (tests/cluster/smoke.sh does that) and reads the env file through the environment: KUBECONFIG, KUBECTL,
// KUBERNETES_VERSION.
package smoke

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"
)

func client(t *testing.T) kubernetes.Interface {
	t.Helper()
	kc := os.Getenv("KUBECONFIG")
	if kc == "" {
		t.Fatal("KUBECONFIG is not set: run through tests/cluster/smoke.sh or source the env file of `scripts/cluster up`")
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", kc)
	if err != nil {
		t.Fatal(err)
	}
	cfg.QPS, cfg.Burst = 50, 100
	c, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// namespace creates a namespace for one test and deletes it afterwards (the namespace controller finishes).
func namespace(t *testing.T, c kubernetes.Interface, labels map[string]string) string {
	t.Helper()
	name := fmt.Sprintf("smoke-%s-%04d", strings.ToLower(regexp.MustCompile(`[^a-zA-Z0-9]+`).ReplaceAllString(t.Name(), "-")), rand.IntN(10000))
	if len(name) > 63 {
		name = name[len(name)-63:]
		name = strings.TrimLeft(name, "-")
	}
	_, err := c.CoreV1().Namespaces().Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.CoreV1().Namespaces().Delete(context.Background(), name, metav1.DeleteOptions{}) })
	// Pods need the default ServiceAccount (serviceaccount controller) and kube-root-ca.crt.
	eventually(t, 30*time.Second, "default ServiceAccount and kube-root-ca.crt in "+name, func() error {
		if _, err := c.CoreV1().ServiceAccounts(name).Get(context.Background(), "default", metav1.GetOptions{}); err != nil {
			return err
		}
		_, err := c.CoreV1().ConfigMaps(name).Get(context.Background(), "kube-root-ca.crt", metav1.GetOptions{})
		return err
	})
	return name
}

// eventually polls check until it returns nil or the deadline passes.
func eventually(t *testing.T, d time.Duration, what string, check func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	var err error
	for {
		if err = check(); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s: %v", d, what, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func jobFor(name string, command string, backoffLimit int32) *batchv1.Job {
	return &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: batchv1.JobSpec{
			BackoffLimit: ptr.To(backoffLimit),
			Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{
				RestartPolicy: corev1.RestartPolicyNever,
				Containers: []corev1.Container{{
					Name: "main", Image: "local/none", Command: []string{"sh", "-c", command},
				}},
			}},
		},
	}
}

func jobCondition(j *batchv1.Job, typ batchv1.JobConditionType) bool {
	for _, c := range j.Status.Conditions {
		if c.Type == typ && c.Status == corev1.ConditionTrue {
			return true
		}
	}
	return false
}

func waitJob(t *testing.T, c kubernetes.Interface, ns, name string, want batchv1.JobConditionType, d time.Duration) *batchv1.Job {
	t.Helper()
	var job *batchv1.Job
	eventually(t, d, "Job "+name+" "+string(want), func() error {
		var err error
		job, err = c.BatchV1().Jobs(ns).Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		for _, other := range []batchv1.JobConditionType{batchv1.JobComplete, batchv1.JobFailed} {
			if other != want && jobCondition(job, other) {
				return fmt.Errorf("job ended %s instead: %+v", other, job.Status)
			}
		}
		if !jobCondition(job, want) {
			return fmt.Errorf("conditions %+v", job.Status.Conditions)
		}
		return nil
	})
	return job
}

func jobPods(t *testing.T, c kubernetes.Interface, ns, job string) []corev1.Pod {
	t.Helper()
	pods, err := c.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{LabelSelector: "batch.kubernetes.io/job-name=" + job})
	if err != nil {
		t.Fatal(err)
	}
	return pods.Items
}

func waitPodPhase(t *testing.T, c kubernetes.Interface, ns, name string, d time.Duration, phases ...corev1.PodPhase) *corev1.Pod {
	t.Helper()
	var pod *corev1.Pod
	eventually(t, d, fmt.Sprintf("Pod %s in phase %v", name, phases), func() error {
		var err error
		pod, err = c.CoreV1().Pods(ns).Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		for _, p := range phases {
			if pod.Status.Phase == p {
				return nil
			}
		}
		return fmt.Errorf("phase %s, containers %+v", pod.Status.Phase, pod.Status.ContainerStatuses)
	})
	return pod
}

func podLogs(t *testing.T, c kubernetes.Interface, ns, pod string, opts *corev1.PodLogOptions) string {
	t.Helper()
	b, err := c.CoreV1().Pods(ns).GetLogs(pod, opts).DoRaw(ctxFor(t, 30*time.Second))
	if err != nil {
		t.Fatalf("logs of %s: %v", pod, err)
	}
	return string(b)
}

func TestVersion(t *testing.T) {
	c := client(t)
	v, err := c.Discovery().ServerVersion()
	if err != nil {
		t.Fatal(err)
	}
	want := os.Getenv("KUBERNETES_VERSION")
	if want == "" || v.GitVersion != want {
		t.Fatalf("/version reports %q, want %q", v.GitVersion, want)
	}
	t.Logf("server version %s", v.GitVersion)
}

// A Job that echoes two lines completes; the log read through the API server is exactly those lines, and a
// follow stream delivers them as they are written.
func TestJobCompletesAndLogsStream(t *testing.T) {
	c := client(t)
	ns := namespace(t, c, nil)
	ctx := ctxFor(t, 2*time.Minute)
	job := jobFor("echo", "echo started; sleep 1; echo done", 0)
	if _, err := c.BatchV1().Jobs(ns).Create(ctx, job, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	// Open the follow stream as soon as the container runs.
	var podName string
	eventually(t, 60*time.Second, "the Job's pod running", func() error {
		pods := jobPods(t, c, ns, "echo")
		if len(pods) == 0 {
			return fmt.Errorf("no pod yet")
		}
		p := pods[0]
		for _, st := range p.Status.ContainerStatuses {
			if st.State.Running != nil {
				podName = p.Name
				return nil
			}
			if st.State.Terminated != nil {
				t.Fatalf("container finished before the test saw it running (too slow to test follow): %+v", st.State.Terminated)
			}
		}
		return fmt.Errorf("container not running: %+v", p.Status.ContainerStatuses)
	})
	stream, err := c.CoreV1().Pods(ns).GetLogs(podName, &corev1.PodLogOptions{Follow: true}).Stream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close()
	type line struct {
		text string
		at   time.Time
	}
	var lines []line
	sc := bufio.NewScanner(stream)
	for sc.Scan() {
		lines = append(lines, line{sc.Text(), time.Now()})
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("follow stream: %v", err)
	}
	if len(lines) != 2 || lines[0].text != "started" || lines[1].text != "done" {
		t.Fatalf("follow stream gave %+v, want started, done", lines)
	}
	if gap := lines[1].at.Sub(lines[0].at); gap < 500*time.Millisecond {
		t.Fatalf("follow delivered both lines within %s: not streamed live", gap)
	}

	waitJob(t, c, ns, "echo", batchv1.JobComplete, 60*time.Second)
	if got := podLogs(t, c, ns, podName, &corev1.PodLogOptions{}); got != "started\ndone\n" {
		t.Fatalf("log = %q, want %q", got, "started\ndone\n")
	}
	if got := podLogs(t, c, ns, podName, &corev1.PodLogOptions{TailLines: ptr.To[int64](1)}); got != "done\n" {
		t.Fatalf("tailLines=1 log = %q", got)
	}
	if got := podLogs(t, c, ns, podName, &corev1.PodLogOptions{LimitBytes: ptr.To[int64](4)}); got != "star" {
		t.Fatalf("limitBytes=4 log = %q", got)
	}
	ts := podLogs(t, c, ns, podName, &corev1.PodLogOptions{Timestamps: true})
	tsLines := strings.Split(strings.TrimSuffix(ts, "\n"), "\n")
	if len(tsLines) != 2 {
		t.Fatalf("timestamps log = %q", ts)
	}
	for i, want := range []string{"started", "done"} {
		stamp, text, _ := strings.Cut(tsLines[i], " ")
		if _, err := time.Parse(time.RFC3339Nano, stamp); err != nil || text != want {
			t.Fatalf("timestamped line %q: want '<RFC3339> %s' (%v)", tsLines[i], want, err)
		}
	}
	p, _ := c.CoreV1().Pods(ns).Get(ctx, podName, metav1.GetOptions{})
	if term := p.Status.ContainerStatuses[0].State.Terminated; term == nil || term.ExitCode != 0 || term.Reason != "Completed" {
		t.Fatalf("container state %+v", p.Status.ContainerStatuses[0].State)
	}
}

// A Job whose container exits 3 ends Failed; every pod shows exit code 3. With backoffLimit 1 there are two
// pods, and the shortened pod-failure back-off (1 s instead of 10 s) keeps this quick.
func TestJobFailsWithExitCode(t *testing.T) {
	c := client(t)
	ns := namespace(t, c, nil)
	start := time.Now()
	if _, err := c.BatchV1().Jobs(ns).Create(context.Background(), jobFor("fail", "echo failing; exit 3", 1), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	job := waitJob(t, c, ns, "fail", batchv1.JobFailed, 90*time.Second)
	took := time.Since(start)
	if job.Status.Failed != 2 {
		t.Fatalf("job status failed=%d, want 2", job.Status.Failed)
	}
	pods := jobPods(t, c, ns, "fail")
	if len(pods) != 2 {
		t.Fatalf("%d pods, want 2", len(pods))
	}
	for _, p := range pods {
		if p.Status.Phase != corev1.PodFailed {
			t.Fatalf("pod %s phase %s", p.Name, p.Status.Phase)
		}
		term := p.Status.ContainerStatuses[0].State.Terminated
		if term == nil || term.ExitCode != 3 || term.Reason != "Error" {
			t.Fatalf("pod %s container state %+v, want terminated with exit code 3", p.Name, p.Status.ContainerStatuses[0].State)
		}
	}
	if took > 10*time.Second {
		t.Fatalf("two failing pods took %s: the job controller's back-off was not shortened", took)
	}
	t.Logf("job failed after %s", took)
}

// A Secret reaches the container through env and a ConfigMap through a volume; the volume is mounted in the
// container's own mount namespace, not on the host.
func TestSecretEnvAndConfigMapVolume(t *testing.T) {
	c := client(t)
	ns := namespace(t, c, nil)
	ctx := ctxFor(t, 2*time.Minute)
	if _, err := c.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "creds"}, StringData: map[string]string{"password": "hunter2"},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "settings"}, Data: map[string]string{"greeting": "hello from configmap", "mode": "fast"},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	mountPath := fmt.Sprintf("/etc/lmeval-smoke-%d", rand.IntN(1_000_000))
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "reader"},
		Spec: corev1.PodSpec{
			RestartPolicy: corev1.RestartPolicyNever,
			Containers: []corev1.Container{{
				Name: "main", Image: "local/none",
				Command: []string{"sh", "-c", `echo "password=$PASSWORD mode=$MODE"; cat "$DIR/greeting"; echo; ls "$DIR"`},
				Env: []corev1.EnvVar{
					{Name: "PASSWORD", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
						LocalObjectReference: corev1.LocalObjectReference{Name: "creds"}, Key: "password"}}},
					{Name: "MODE", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{
						LocalObjectReference: corev1.LocalObjectReference{Name: "settings"}, Key: "mode"}}},
					{Name: "DIR", Value: mountPath},
				},
				VolumeMounts: []corev1.VolumeMount{{Name: "settings", MountPath: mountPath}},
			}},
			Volumes: []corev1.Volume{{Name: "settings", VolumeSource: corev1.VolumeSource{
				ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "settings"}}}}},
		},
	}
	if _, err := c.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	p := waitPodPhase(t, c, ns, "reader", 60*time.Second, corev1.PodSucceeded, corev1.PodFailed)
	got := podLogs(t, c, ns, "reader", &corev1.PodLogOptions{})
	want := "password=hunter2 mode=fast\nhello from configmap\ngreeting\nmode\n"
	if p.Status.Phase != corev1.PodSucceeded || got != want {
		t.Fatalf("phase %s, log %q, want %q", p.Status.Phase, got, want)
	}
	if _, err := os.Stat(filepath.Join(mountPath, "greeting")); err == nil {
		t.Fatalf("%s/greeting is visible on the host: the volume leaked out of the container's mount namespace", mountPath)
	}
	_ = os.Remove(mountPath) // the empty mount point the agent created
}

// A PVC bound to a hostPath PV: what the container writes appears on the host path.
func TestPersistentVolumeClaimHostPath(t *testing.T) {
	c := client(t)
	ns := namespace(t, c, nil)
	ctx := ctxFor(t, 2*time.Minute)
	hostDir := t.TempDir()
	// Mount points are created on the host (empty); keep them inside a directory the test removes.
	mountPath := filepath.Join(t.TempDir(), "results")
	pvName := "pv-" + ns
	if _, err := c.CoreV1().PersistentVolumes().Create(ctx, &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: pvName},
		Spec: corev1.PersistentVolumeSpec{
			Capacity:                      corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")},
			AccessModes:                   []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			PersistentVolumeReclaimPolicy: corev1.PersistentVolumeReclaimRetain,
			StorageClassName:              "lmeval-hostpath",
			PersistentVolumeSource:        corev1.PersistentVolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: hostDir}},
		},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = c.CoreV1().PersistentVolumes().Delete(context.Background(), pvName, metav1.DeleteOptions{})
	})
	if _, err := c.CoreV1().PersistentVolumeClaims(ns).Create(ctx, &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: "results"},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes:      []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			StorageClassName: ptr.To("lmeval-hostpath"),
			VolumeName:       pvName,
			Resources:        corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}},
		},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "writer"},
		Spec: corev1.PodSpec{
			RestartPolicy: corev1.RestartPolicyNever,
			Containers: []corev1.Container{{
				Name: "main", Image: "local/none",
				Command:      []string{"sh", "-c", "echo written-by-pod > " + mountPath + "/out.txt"},
				VolumeMounts: []corev1.VolumeMount{{Name: "results", MountPath: mountPath}},
			}},
			Volumes: []corev1.Volume{{Name: "results", VolumeSource: corev1.VolumeSource{
				PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "results"}}}},
		},
	}
	if _, err := c.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	p := waitPodPhase(t, c, ns, "writer", 60*time.Second, corev1.PodSucceeded, corev1.PodFailed)
	if p.Status.Phase != corev1.PodSucceeded {
		t.Fatalf("pod failed: %+v; log %q", p.Status.ContainerStatuses, podLogs(t, c, ns, "writer", &corev1.PodLogOptions{}))
	}
	b, err := os.ReadFile(filepath.Join(hostDir, "out.txt"))
	if err != nil || string(b) != "written-by-pod\n" {
		t.Fatalf("host file: %q, %v", b, err)
	}
	if _, err := os.Stat(filepath.Join(mountPath, "out.txt")); err == nil {
		t.Fatalf("%s/out.txt exists on the host: the PV was not mounted in the container's own namespace", mountPath)
	}
}

// A client inside a Pod, configured only by the projected service-account token and KUBERNETES_SERVICE_*,
// may create a ConfigMap when its Role allows and gets 403 Forbidden when it does not.
func TestInClusterClientUnderRBAC(t *testing.T) {
	c := client(t)
	kubectl := os.Getenv("KUBECTL")
	if kubectl == "" {
		t.Fatal("KUBECTL is not set")
	}
	ns := namespace(t, c, nil)
	ctx := ctxFor(t, 2*time.Minute)
	for _, sa := range []string{"writer", "nobody"} {
		if _, err := c.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.RbacV1().Roles(ns).Create(ctx, &rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{Name: "configmap-writer"},
		Rules:      []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"configmaps"}, Verbs: []string{"create", "get"}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.RbacV1().RoleBindings(ns).Create(ctx, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "writer"},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: "configmap-writer"},
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: "writer", Namespace: ns}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	home := filepath.Join(t.TempDir(), "home")
	run := func(sa string) (*corev1.Pod, string) {
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: "as-" + sa},
			Spec: corev1.PodSpec{
				ServiceAccountName: sa,
				RestartPolicy:      corev1.RestartPolicyNever,
				Containers: []corev1.Container{{
					Name: "main", Image: "local/none",
					// No kubeconfig: kubectl falls back to the in-cluster config (token, ca.crt, namespace files
					// and KUBERNETES_SERVICE_HOST/PORT), and verifies the API server's certificate for 127.0.0.1.
					Command:      []string{kubectl, "create", "configmap", "made-by-" + sa, "--from-literal=k=v"},
					Env:          []corev1.EnvVar{{Name: "HOME", Value: home}},
					VolumeMounts: []corev1.VolumeMount{{Name: "home", MountPath: home}},
				}},
				Volumes: []corev1.Volume{{Name: "home", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}},
			},
		}
		if _, err := c.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		p := waitPodPhase(t, c, ns, pod.Name, 60*time.Second, corev1.PodSucceeded, corev1.PodFailed)
		return p, podLogs(t, c, ns, pod.Name, &corev1.PodLogOptions{})
	}

	p, log := run("writer")
	if p.Status.Phase != corev1.PodSucceeded {
		t.Fatalf("writer pod %s: %q", p.Status.Phase, log)
	}
	cm, err := c.CoreV1().ConfigMaps(ns).Get(ctx, "made-by-writer", metav1.GetOptions{})
	if err != nil || cm.Data["k"] != "v" {
		t.Fatalf("configmap made by the pod: %+v, %v", cm, err)
	}

	p, log = run("nobody")
	if p.Status.Phase != corev1.PodFailed || !strings.Contains(log, "forbidden") ||
		!strings.Contains(log, "system:serviceaccount:"+ns+":nobody") {
		t.Fatalf("nobody pod %s, log %q: want a 403 Forbidden for system:serviceaccount:%s:nobody", p.Status.Phase, log, ns)
	}
	if _, err := c.CoreV1().ConfigMaps(ns).Get(ctx, "made-by-nobody", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("made-by-nobody exists or error: %v", err)
	}
}

// Deleting a running Job with background propagation kills its process within 5 s and the garbage collector
// removes the pod.
func TestDeleteRunningJobKillsProcess(t *testing.T) {
	c := client(t)
	ns := namespace(t, c, nil)
	ctx := ctxFor(t, 2*time.Minute)
	hostDir := t.TempDir()
	// "$$" is Kubernetes' escape for "$" in command/args, so "$$$$" reaches the shell as "$$".
	mountPath := filepath.Join(t.TempDir(), "pid")
	job := jobFor("sleeper", "echo $$$$ > "+mountPath+"/pid; exec sleep 300", 0)
	job.Spec.Template.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "pid", MountPath: mountPath}}
	job.Spec.Template.Spec.Volumes = []corev1.Volume{{Name: "pid", VolumeSource: corev1.VolumeSource{
		HostPath: &corev1.HostPathVolumeSource{Path: hostDir}}}}
	if _, err := c.BatchV1().Jobs(ns).Create(ctx, job, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var pid int
	eventually(t, 60*time.Second, "the sleeper's pid on the host", func() error {
		b, err := os.ReadFile(filepath.Join(hostDir, "pid"))
		if err != nil {
			return err
		}
		pid, err = strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil {
			return err
		}
		if !processAlive(pid) {
			return fmt.Errorf("pid %d not alive", pid)
		}
		return nil
	})
	eventually(t, 30*time.Second, "pod Running", func() error {
		pods := jobPods(t, c, ns, "sleeper")
		if len(pods) != 1 || pods[0].Status.Phase != corev1.PodRunning {
			return fmt.Errorf("pods %d", len(pods))
		}
		return nil
	})

	deleted := time.Now()
	if err := c.BatchV1().Jobs(ns).Delete(ctx, "sleeper", metav1.DeleteOptions{PropagationPolicy: ptr.To(metav1.DeletePropagationBackground)}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, fmt.Sprintf("process %d to be killed", pid), func() error {
		if processAlive(pid) {
			return fmt.Errorf("pid %d still alive", pid)
		}
		return nil
	})
	t.Logf("process gone %s after the Job was deleted", time.Since(deleted).Round(time.Millisecond))
	eventually(t, 60*time.Second, "the garbage collector to remove the pod", func() error {
		if pods := jobPods(t, c, ns, "sleeper"); len(pods) > 0 {
			return fmt.Errorf("%d pods left (%s, deletionTimestamp %v, finalizers %v)", len(pods), pods[0].Status.Phase, pods[0].DeletionTimestamp, pods[0].Finalizers)
		}
		return nil
	})
}

// Pods in a namespace that enforces the restricted Pod Security Standard run (the agent does not switch users
// but accepts runAsNonRoot/runAsUser), workingDir is honoured, and Pod Security Admission rejects a
// non-compliant pod.
func TestRestrictedNamespaceAndWorkingDir(t *testing.T) {
	c := client(t)
	ns := namespace(t, c, map[string]string{"pod-security.kubernetes.io/enforce": "restricted"})
	ctx := ctxFor(t, 2*time.Minute)
	workDir := t.TempDir()
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "restricted"},
		Spec: corev1.PodSpec{
			RestartPolicy: corev1.RestartPolicyNever,
			SecurityContext: &corev1.PodSecurityContext{
				RunAsNonRoot: ptr.To(true), RunAsUser: ptr.To[int64](1000),
				SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
			},
			Containers: []corev1.Container{{
				Name: "main", Image: "local/none", WorkingDir: workDir,
				Command: []string{"sh", "-c", "pwd; echo $CPU_REQUEST"},
				Env:     []corev1.EnvVar{{Name: "CPU_REQUEST", ValueFrom: &corev1.EnvVarSource{ResourceFieldRef: &corev1.ResourceFieldSelector{Resource: "requests.cpu"}}}},
				Resources: corev1.ResourceRequirements{
					Requests: corev1.ResourceList{"nvidia.com/gpu": resource.MustParse("1"), corev1.ResourceCPU: resource.MustParse("1")},
					Limits:   corev1.ResourceList{"nvidia.com/gpu": resource.MustParse("1")},
				},
				SecurityContext: &corev1.SecurityContext{
					AllowPrivilegeEscalation: ptr.To(false),
					Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
					ReadOnlyRootFilesystem:   ptr.To(true),
				},
			}},
		},
	}
	if _, err := c.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	p := waitPodPhase(t, c, ns, "restricted", 60*time.Second, corev1.PodSucceeded, corev1.PodFailed)
	got := podLogs(t, c, ns, "restricted", &corev1.PodLogOptions{})
	if want := workDir + "\n1\n"; p.Status.Phase != corev1.PodSucceeded || got != want {
		t.Fatalf("phase %s, log %q, want %q", p.Status.Phase, got, want)
	}

	bad := pod.DeepCopy()
	bad.Name = "privileged"
	bad.Spec.SecurityContext = nil
	bad.Spec.Containers[0].SecurityContext = &corev1.SecurityContext{Privileged: ptr.To(true)}
	_, err := c.CoreV1().Pods(ns).Create(ctx, bad, metav1.CreateOptions{})
	if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), "violates PodSecurity") {
		t.Fatalf("creating a privileged pod in a restricted namespace: %v, want Forbidden by PodSecurity", err)
	}
}

// Commands in LMEVAL_CLUSTER_EXTRA_PATH (set for `scripts/cluster up`; smoke.sh puts lmeval-smoke-hello there)
// resolve inside pods, ahead of the agent's own PATH.
func TestExtraPath(t *testing.T) {
	extra := os.Getenv("LMEVAL_CLUSTER_EXTRA_PATH")
	if _, err := os.Stat(filepath.Join(extra, "lmeval-smoke-hello")); extra == "" || err != nil {
		t.Skip("LMEVAL_CLUSTER_EXTRA_PATH has no lmeval-smoke-hello (smoke.sh provides it)")
	}
	c := client(t)
	ns := namespace(t, c, nil)
	ctx := ctxFor(t, time.Minute)
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "extra-path"},
		Spec: corev1.PodSpec{
			RestartPolicy: corev1.RestartPolicyNever,
			Containers: []corev1.Container{{
				Name: "main", Image: "local/none", Command: []string{"lmeval-smoke-hello"}, Args: []string{"$(WHO)"},
				Env: []corev1.EnvVar{{Name: "WHO", Value: "pod"}},
			}},
		},
	}
	if _, err := c.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	p := waitPodPhase(t, c, ns, "extra-path", 60*time.Second, corev1.PodSucceeded, corev1.PodFailed)
	got := podLogs(t, c, ns, "extra-path", &corev1.PodLogOptions{})
	if want := "hello from the extra path: pod\n"; p.Status.Phase != corev1.PodSucceeded || got != want {
		t.Fatalf("phase %s, log %q, want %q", p.Status.Phase, got, want)
	}
}

// processAlive is false for a missing or zombie process.
func processAlive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 >= len(b) {
		return false
	}
	state := b[i+2]
	return state != 'Z' && state != 'X'
}
