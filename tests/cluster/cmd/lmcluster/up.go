package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

const nodeName = "lmeval-node"

// defaultControllers are the kube-controller-manager controllers the tests rely on. Node lifecycle stays off:
// it would taint the agent's Node whenever it dislikes its heartbeats.
var defaultControllers = []string{
	"job-controller", "garbage-collector-controller", "namespace-controller", "serviceaccount-controller",
	"serviceaccount-token-controller", "ttl-after-finished-controller",
	// kube-root-ca.crt in every namespace: the ca.crt of the projected service-account volume.
	"root-ca-certificate-publisher-controller",
	// The built-in admin/edit/view ClusterRoles are aggregated; without this controller they are empty.
	"clusterrole-aggregation-controller",
	// PVC <-> PV binding, and the finalizers the StorageObjectInUseProtection admission plugin adds.
	"persistentvolume-binder-controller", "persistentvolumeclaim-protection-controller", "persistentvolume-protection-controller",
	// Cheap, and what a Deployment of the service under test needs.
	"deployment-controller", "replicaset-controller", "pod-garbage-collector-controller",
}

func defaultStateDir() string {
	if d := os.Getenv("LMEVAL_CLUSTER_DIR"); d != "" {
		return d
	}
	tmp := os.Getenv("TMPDIR")
	if tmp == "" {
		tmp = "/tmp"
	}
	return filepath.Join(tmp, "lm-eval-aas-cluster")
}

// cluster is the layout of a state directory.
type cluster struct{ dir string }

func (c cluster) pidDir() string       { return filepath.Join(c.dir, "pids") }
func (c cluster) logDir() string       { return filepath.Join(c.dir, "logs") }
func (c cluster) envFile() string      { return filepath.Join(c.dir, "env") }
func (c cluster) kubeconfig() string   { return filepath.Join(c.dir, "admin.kubeconfig") }
func (c cluster) path(p string) string { return filepath.Join(c.dir, p) }

// order in which components start; down stops them in reverse.
var componentOrder = []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "node"}

func runUp(args []string) int {
	fs := flag.NewFlagSet("up", flag.ExitOnError)
	dir := fs.String("dir", defaultStateDir(), "state directory (env LMEVAL_CLUSTER_DIR)")
	timeout := fs.Duration("timeout", 120*time.Second, "how long to wait for the cluster to run a Pod")
	_ = fs.Parse(args)
	c := cluster{dir: *dir}
	start := time.Now()
	if alive := c.livePIDs(); len(alive) > 0 {
		fmt.Fprintf(os.Stderr, "up: a cluster is already running in %s (pids %v); run `scripts/cluster down` first\n", c.dir, alive)
		return 1
	}
	_ = os.RemoveAll(c.dir)
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	if err := c.up(ctx); err != nil {
		fmt.Fprintf(os.Stderr, "up: %v\n", err)
		c.printLogs(os.Stderr, 40)
		c.stopAll()
		fmt.Fprintf(os.Stderr, "up: failed; processes stopped, logs kept in %s (`scripts/cluster down` removes them)\n", c.logDir())
		return 1
	}
	fmt.Fprintf(os.Stderr, "up: cluster ready in %.1fs; env file %s\n", time.Since(start).Seconds(), c.envFile())
	return 0
}

func (c cluster) up(ctx context.Context) error {
	for _, d := range []string{c.pidDir(), c.logDir(), c.path("node")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	for _, d := range []string{c.path("etcd")} { // etcd wants its data dir private
		if err := os.MkdirAll(d, 0o700); err != nil {
			return err
		}
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	ports, err := freePorts(6)
	if err != nil {
		return err
	}
	etcdPort, etcdPeer, apiPort, kcmPort, schedPort, kubeletPort := ports[0], ports[1], ports[2], ports[3], ports[4], ports[5]
	apiURL := fmt.Sprintf("https://127.0.0.1:%d", apiPort)

	p, err := newPKI(c.path("pki"))
	if err != nil {
		return fmt.Errorf("pki: %w", err)
	}
	if err := p.serving("apiserver", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"); err != nil {
		return err
	}
	if err := p.serving("kubelet", nodeName); err != nil {
		return err
	}
	if err := p.serviceAccountKeys(); err != nil {
		return err
	}

	// Static tokens: the admin is in system:masters; control-plane components get their own names (for audit
	// and logs) but are trusted the same way; the node agent is a real node identity, so the Node authorizer
	// restricts it to the objects of the pods bound to it.
	type identity struct{ file, user, groups string }
	ids := []identity{
		{"admin", "lmeval-admin", "system:masters"},
		{"controller-manager", "system:kube-controller-manager", "system:masters"},
		{"scheduler", "system:kube-scheduler", "system:masters"},
		{"node", "system:node:" + nodeName, "system:nodes"},
	}
	var tokens strings.Builder
	for _, id := range ids {
		tok := randomToken()
		fmt.Fprintf(&tokens, "%s,%s,%s,\"%s\"\n", tok, id.user, id.user, id.groups)
		if err := writeKubeconfig(c.path(id.file+".kubeconfig"), apiURL, p.path("ca.crt"), tok, id.user); err != nil {
			return err
		}
	}
	if err := os.WriteFile(p.path("tokens.csv"), []byte(tokens.String()), 0o600); err != nil {
		return err
	}

	if err := c.start(self, "etcd", "--data-dir", c.path("etcd"), "--client-port", itoa(etcdPort), "--peer-port", itoa(etcdPeer)); err != nil {
		return err
	}
	if err := waitFor(ctx, "etcd", func() error { return httpOK(ctx, nil, fmt.Sprintf("http://127.0.0.1:%d/health", etcdPort), "") }); err != nil {
		return err
	}

	err = c.start(self, "kube-apiserver",
		"--etcd-servers", fmt.Sprintf("http://127.0.0.1:%d", etcdPort),
		"--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", "--secure-port="+itoa(apiPort),
		"--tls-cert-file="+p.path("apiserver.crt"), "--tls-private-key-file="+p.path("apiserver.key"),
		"--client-ca-file="+p.path("ca.crt"),
		"--token-auth-file="+p.path("tokens.csv"),
		"--authorization-mode=Node,RBAC",
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file="+p.path("sa.pub"),
		"--service-account-signing-key-file="+p.path("sa.key"),
		"--service-cluster-ip-range=10.96.0.0/16",
		"--endpoint-reconciler-type=none",
		"--kubelet-preferred-address-types=InternalIP,Hostname",
		"--allow-privileged=true",
		"--profiling=false",
		"--cert-dir="+c.path("apiserver-certs"),
		"--v=1",
	)
	if err != nil {
		return err
	}
	admin, err := os.ReadFile(c.path("admin.kubeconfig"))
	if err != nil {
		return err
	}
	adminCfg, err := clientcmd.RESTConfigFromKubeConfig(admin)
	if err != nil {
		return err
	}
	caPool := x509.NewCertPool()
	caPool.AddCert(p.caCert)
	if err := waitFor(ctx, "kube-apiserver /readyz", func() error {
		return httpOK(ctx, caPool, apiURL+"/readyz", adminCfg.BearerToken)
	}); err != nil {
		return err
	}

	controllers := defaultControllers
	if v := os.Getenv("LMEVAL_CLUSTER_CONTROLLERS"); v != "" {
		controllers = strings.Split(v, ",")
	}
	kcmKubeconfig := c.path("controller-manager.kubeconfig")
	err = c.start(self, "kube-controller-manager",
		"--kubeconfig="+kcmKubeconfig, "--authentication-kubeconfig="+kcmKubeconfig, "--authorization-kubeconfig="+kcmKubeconfig,
		"--leader-elect=false",
		"--controllers="+strings.Join(controllers, ","),
		"--root-ca-file="+p.path("ca.crt"),
		"--service-account-private-key-file="+p.path("sa.key"),
		"--use-service-account-credentials=false",
		"--bind-address=127.0.0.1", "--secure-port="+itoa(kcmPort),
		"--cert-dir="+c.path("controller-manager-certs"),
		"--kube-api-qps=100", "--kube-api-burst=200",
		"--concurrent-job-syncs=10",
		"--v=1",
	)
	if err != nil {
		return err
	}
	schedKubeconfig := c.path("scheduler.kubeconfig")
	err = c.start(self, "kube-scheduler",
		"--kubeconfig="+schedKubeconfig, "--authentication-kubeconfig="+schedKubeconfig, "--authorization-kubeconfig="+schedKubeconfig,
		"--leader-elect=false",
		"--bind-address=127.0.0.1", "--secure-port="+itoa(schedPort),
		"--cert-dir="+c.path("scheduler-certs"),
		"--v=1",
	)
	if err != nil {
		return err
	}
	err = c.start(self, "node",
		"--kubeconfig="+c.path("node.kubeconfig"), "--name="+nodeName, "--state-dir="+c.path("node"),
		"--port="+itoa(kubeletPort), "--tls-cert-file="+p.path("kubelet.crt"), "--tls-private-key-file="+p.path("kubelet.key"),
		"--apiserver-port="+itoa(apiPort),
	)
	if err != nil {
		return err
	}

	binDir := filepath.Dir(self)
	env := [][2]string{
		{"KUBECONFIG", c.kubeconfig()},
		{"LMEVAL_CLUSTER_DIR", c.dir},
		{"LMEVAL_CLUSTER_APISERVER", apiURL},
		{"LMEVAL_CLUSTER_CA", p.path("ca.crt")},
		{"LMEVAL_CLUSTER_TOKEN", adminCfg.BearerToken},
		{"LMEVAL_CLUSTER_NODE", nodeName},
		{"LMEVAL_CLUSTER_BIN", self},
		{"LMEVAL_CLUSTER_LOGS", c.logDir()},
		{"LMEVAL_CLUSTER_PORTS", strings.Join([]string{itoa(etcdPort), itoa(etcdPeer), itoa(apiPort), itoa(kcmPort), itoa(schedPort), itoa(kubeletPort)}, ",")},
		{"KUBERNETES_VERSION", k8sVersion},
		{"KUBECTL", filepath.Join(binDir, "kubectl")},
		// lmcluster and kubectl; PATH="$LMEVAL_CLUSTER_BIN_DIR:$PATH" puts kubectl on PATH.
		{"LMEVAL_CLUSTER_BIN_DIR", binDir},
	}
	client, err := kubernetes.NewForConfig(adminCfg)
	if err != nil {
		return err
	}
	if err := waitReady(ctx, client); err != nil {
		return err
	}
	var b strings.Builder
	for _, kv := range env {
		fmt.Fprintf(&b, "%s=%s\n", kv[0], kv[1])
	}
	return os.WriteFile(c.envFile(), []byte(b.String()), 0o600)
}

// waitReady waits until the cluster can run a Pod end to end: Node registered and schedulable, the default
// ServiceAccount and kube-root-ca.crt published, and a probe Pod (scheduled, token mounted, process run)
// succeeds.
func waitReady(ctx context.Context, client kubernetes.Interface) error {
	if err := waitFor(ctx, "Node "+nodeName+" Ready without taints", func() error {
		n, err := client.CoreV1().Nodes().Get(ctx, nodeName, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if len(n.Spec.Taints) > 0 {
			return fmt.Errorf("taints %v", n.Spec.Taints)
		}
		for _, c := range n.Status.Conditions {
			if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue {
				return nil
			}
		}
		return errors.New("not Ready")
	}); err != nil {
		return err
	}
	if err := waitFor(ctx, "ServiceAccount default/default and ConfigMap kube-root-ca.crt", func() error {
		if _, err := client.CoreV1().ServiceAccounts("default").Get(ctx, "default", metav1.GetOptions{}); err != nil {
			return err
		}
		_, err := client.CoreV1().ConfigMaps("default").Get(ctx, "kube-root-ca.crt", metav1.GetOptions{})
		return err
	}); err != nil {
		return err
	}
	probe := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "lmcluster-probe", Namespace: "default"},
		Spec: corev1.PodSpec{
			RestartPolicy: corev1.RestartPolicyNever,
			Containers: []corev1.Container{{
				Name: "probe", Image: "local", Command: []string{"sh", "-c", "test -s /var/run/secrets/kubernetes.io/serviceaccount/token"},
			}},
		},
	}
	if _, err := client.CoreV1().Pods("default").Create(ctx, probe, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create probe pod: %w", err)
	}
	err := waitFor(ctx, "probe Pod Succeeded", func() error {
		p, err := client.CoreV1().Pods("default").Get(ctx, probe.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		switch p.Status.Phase {
		case corev1.PodSucceeded:
			return nil
		case corev1.PodFailed:
			return backoffStop{fmt.Errorf("probe pod failed: %+v", p.Status.ContainerStatuses)}
		}
		return fmt.Errorf("phase %s", p.Status.Phase)
	})
	if err != nil {
		return err
	}
	zero := int64(0)
	if err := client.CoreV1().Pods("default").Delete(ctx, probe.Name, metav1.DeleteOptions{GracePeriodSeconds: &zero}); err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	return waitFor(ctx, "probe Pod deleted", func() error {
		_, err := client.CoreV1().Pods("default").Get(ctx, probe.Name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		return errors.New("still there")
	})
}

// backoffStop makes waitFor give up at once.
type backoffStop struct{ error }

func waitFor(ctx context.Context, what string, check func() error) error {
	var last error
	for {
		last = check()
		if last == nil {
			return nil
		}
		var stop backoffStop
		if errors.As(last, &stop) {
			return fmt.Errorf("%s: %w", what, stop.error)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("timed out waiting for %s: %v", what, last)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func httpOK(ctx context.Context, ca *x509.CertPool, url, token string) error {
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca}}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	return nil
}

// start launches a component as its own session (so it outlives `up`), logging to logs/<name>.log, and
// records its PID and start time so `down` stops exactly this process.
func (c cluster) start(self, name string, args ...string) error {
	logFile, err := os.OpenFile(filepath.Join(c.logDir(), name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logFile.Close()
	cmd := exec.Command(self, append([]string{name}, args...)...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.Dir = c.dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", name, err)
	}
	pid := cmd.Process.Pid
	if err := os.WriteFile(filepath.Join(c.pidDir(), name+".pid"), []byte(fmt.Sprintf("%d %s\n", pid, procStartTime(pid))), 0o644); err != nil {
		return err
	}
	// Reap it if it dies while `up` still runs, so a crash is seen as "not alive" rather than a zombie.
	go func() { _ = cmd.Wait() }()
	return nil
}

func freePorts(n int) ([]int, error) {
	var ports []int
	var lns []net.Listener
	defer func() {
		for _, l := range lns {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		lns = append(lns, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

func writeKubeconfig(path, server, caFile, token, user string) error {
	ca, err := os.ReadFile(caFile)
	if err != nil {
		return err
	}
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["lmeval"] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: ca}
	cfg.AuthInfos[user] = &clientcmdapi.AuthInfo{Token: token}
	cfg.Contexts["lmeval"] = &clientcmdapi.Context{Cluster: "lmeval", AuthInfo: user, Namespace: "default"}
	cfg.CurrentContext = "lmeval"
	return clientcmd.WriteToFile(*cfg, path)
}

func itoa(i int) string { return strconv.Itoa(i) }

// ---- down / env ----

type pidRecord struct {
	name  string
	file  string
	pid   int
	start string
	group bool // a container: kill its whole process group
}

// pidRecords lists the components (in start order) and any container process groups still recorded.
func (c cluster) pidRecords() []pidRecord {
	var recs []pidRecord
	read := func(name, file string, group bool) {
		b, err := os.ReadFile(file)
		if err != nil {
			return
		}
		f := strings.Fields(string(b))
		if len(f) == 0 {
			return
		}
		pid, err := strconv.Atoi(f[0])
		if err != nil || pid <= 1 {
			return
		}
		r := pidRecord{name: name, file: file, pid: pid, group: group}
		if len(f) > 1 {
			r.start = f[1]
		}
		recs = append(recs, r)
	}
	for _, name := range componentOrder {
		read(name, filepath.Join(c.pidDir(), name+".pid"), false)
	}
	containers, _ := filepath.Glob(filepath.Join(c.path("node"), "pods", "*", "pids", "*.pid"))
	sort.Strings(containers)
	for _, f := range containers {
		read("container "+f, f, true)
	}
	return recs
}

// alive is true if the recorded process still exists and is the same process (same start time), so a
// recycled PID is never signalled.
func (r pidRecord) alive() bool {
	st := procStartTime(r.pid)
	if st == "" {
		return false
	}
	if r.start != "" && st != r.start {
		return false
	}
	state := procState(r.pid)
	return state != "Z" && state != "X"
}

func (c cluster) livePIDs() []int {
	var out []int
	for _, r := range c.pidRecords() {
		if r.alive() {
			out = append(out, r.pid)
		}
	}
	return out
}

// stopAll stops the components in reverse start order (SIGTERM, then SIGKILL after 10 s), then any container
// process group the node agent did not get to.
func (c cluster) stopAll() bool {
	recs := c.pidRecords()
	ok := true
	var comps, conts []pidRecord
	for _, r := range recs {
		if r.group {
			conts = append(conts, r)
		} else {
			comps = append(comps, r)
		}
	}
	for i := len(comps) - 1; i >= 0; i-- {
		ok = stopProcess(comps[i], 10*time.Second) && ok
	}
	for _, r := range conts {
		ok = stopProcess(r, 2*time.Second) && ok
	}
	return ok
}

func stopProcess(r pidRecord, grace time.Duration) bool {
	if !r.alive() {
		return true
	}
	target := r.pid
	if r.group {
		target = -r.pid
	}
	_ = syscall.Kill(target, syscall.SIGTERM)
	deadline := time.Now().Add(grace)
	for time.Now().Before(deadline) {
		if !r.alive() {
			return true
		}
		time.Sleep(50 * time.Millisecond)
	}
	fmt.Fprintf(os.Stderr, "down: %s (pid %d) ignored SIGTERM for %s; sending SIGKILL\n", r.name, r.pid, grace)
	_ = syscall.Kill(target, syscall.SIGKILL)
	deadline = time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if !r.alive() {
			return true
		}
		time.Sleep(50 * time.Millisecond)
	}
	fmt.Fprintf(os.Stderr, "down: %s (pid %d) is still alive\n", r.name, r.pid)
	return false
}

func runDown(args []string) int {
	fs := flag.NewFlagSet("down", flag.ExitOnError)
	dir := fs.String("dir", defaultStateDir(), "state directory (env LMEVAL_CLUSTER_DIR)")
	keep := fs.Bool("keep-logs", false, "keep the state directory")
	_ = fs.Parse(args)
	c := cluster{dir: *dir}
	if _, err := os.Stat(c.dir); os.IsNotExist(err) {
		fmt.Fprintf(os.Stderr, "down: nothing to do (%s does not exist)\n", c.dir)
		return 0
	}
	if !c.stopAll() {
		fmt.Fprintf(os.Stderr, "down: some processes could not be stopped; keeping %s\n", c.dir)
		return 1
	}
	if !*keep {
		if err := os.RemoveAll(c.dir); err != nil {
			fmt.Fprintf(os.Stderr, "down: remove %s: %v\n", c.dir, err)
			return 1
		}
	}
	fmt.Fprintf(os.Stderr, "down: stopped; removed %s\n", c.dir)
	return 0
}

func runEnv(args []string) int {
	fs := flag.NewFlagSet("env", flag.ExitOnError)
	dir := fs.String("dir", defaultStateDir(), "state directory (env LMEVAL_CLUSTER_DIR)")
	_ = fs.Parse(args)
	b, err := os.ReadFile(cluster{dir: *dir}.envFile())
	if err != nil {
		fmt.Fprintf(os.Stderr, "env: no running cluster in %s (run `scripts/cluster up`): %v\n", *dir, err)
		return 1
	}
	os.Stdout.Write(b)
	return 0
}

// printLogs writes the last n lines of every component log.
func (c cluster) printLogs(w *os.File, n int) {
	files, _ := filepath.Glob(filepath.Join(c.logDir(), "*.log"))
	for _, f := range files {
		fh, err := os.Open(f)
		if err != nil {
			continue
		}
		var lines []string
		sc := bufio.NewScanner(fh)
		sc.Buffer(make([]byte, 64*1024), 1024*1024)
		for sc.Scan() {
			lines = append(lines, sc.Text())
			if len(lines) > n {
				lines = lines[1:]
			}
		}
		fh.Close()
		fmt.Fprintf(w, "----- %s (last %d lines) -----\n%s\n", f, n, strings.Join(lines, "\n"))
	}
}
