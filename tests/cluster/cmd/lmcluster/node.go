package main

import (
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/util/retry"
)

// agent is the node agent: a kubelet stand-in that registers one Node and runs the pods bound to it as local
// processes (one mount namespace per container), reporting their status and serving their logs.
type agent struct {
	client    kubernetes.Interface
	nodeName  string
	stateDir  string
	apiPort   int
	extraPath string

	mu   sync.Mutex
	pods map[types.UID]*podRuntime
	// byName maps namespace/name to the UID of the newest pod with that name, for the log endpoint.
	byName map[string]types.UID
}

func runNode(args []string) int {
	fs := flag.NewFlagSet("node", flag.ExitOnError)
	kubeconfig := fs.String("kubeconfig", "", "kubeconfig of the node identity")
	name := fs.String("name", "lmeval-node", "Node name")
	stateDir := fs.String("state-dir", "", "directory for pod volumes and logs (required)")
	port := fs.Int("port", 10250, "port of the kubelet API (container logs) on 127.0.0.1")
	tlsCert := fs.String("tls-cert-file", "", "serving certificate for the kubelet API")
	tlsKey := fs.String("tls-private-key-file", "", "serving key for the kubelet API")
	apiPort := fs.Int("apiserver-port", 6443, "API server port, passed to containers as KUBERNETES_SERVICE_PORT")
	cpu := fs.String("cpu", envOr("LMEVAL_CLUSTER_NODE_CPU", "32"), "allocatable cpu")
	memory := fs.String("memory", envOr("LMEVAL_CLUSTER_NODE_MEMORY", "128Gi"), "allocatable memory")
	gpus := fs.String("gpus", envOr("LMEVAL_CLUSTER_NODE_GPUS", "8"), "allocatable nvidia.com/gpu")
	_ = fs.Parse(args)
	if *stateDir == "" || *kubeconfig == "" {
		fmt.Fprintln(os.Stderr, "node: --state-dir and --kubeconfig are required")
		return 2
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
	if err != nil {
		fmt.Fprintf(os.Stderr, "node: %v\n", err)
		return 1
	}
	cfg.QPS, cfg.Burst = 50, 100
	cfg.UserAgent = "lmcluster-node"
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		fmt.Fprintf(os.Stderr, "node: %v\n", err)
		return 1
	}
	a := &agent{
		client:    client,
		nodeName:  *name,
		stateDir:  *stateDir,
		apiPort:   *apiPort,
		extraPath: os.Getenv("LMEVAL_CLUSTER_EXTRA_PATH"),
		pods:      map[types.UID]*podRuntime{},
		byName:    map[string]types.UID{},
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	cert, err := tls.LoadX509KeyPair(*tlsCert, *tlsKey)
	if err != nil {
		logf("node: kubelet serving certificate: %v", err)
		return 1
	}
	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(*port)))
	if err != nil {
		logf("node: listen: %v", err)
		return 1
	}
	srv := &http.Server{Handler: a.router(), TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}}, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.ServeTLS(ln, "", ""); err != nil && err != http.ErrServerClosed {
			logf("node: kubelet API: %v", err)
			stop()
		}
	}()

	capacity := corev1.ResourceList{
		corev1.ResourceCPU:              resource.MustParse(*cpu),
		corev1.ResourceMemory:           resource.MustParse(*memory),
		corev1.ResourcePods:             resource.MustParse("110"),
		corev1.ResourceEphemeralStorage: resource.MustParse("100Gi"),
		"nvidia.com/gpu":                resource.MustParse(*gpus),
	}
	if err := a.register(ctx, capacity, *port); err != nil {
		logf("node: register: %v", err)
		return 1
	}
	go a.heartbeat(ctx)

	factory := informers.NewSharedInformerFactoryWithOptions(client, 0, informers.WithTweakListOptions(func(o *metav1.ListOptions) {
		o.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", a.nodeName).String()
	}))
	inf := factory.Core().V1().Pods().Informer()
	_, _ = inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { a.podChanged(ctx, obj.(*corev1.Pod)) },
		UpdateFunc: func(_, obj any) { a.podChanged(ctx, obj.(*corev1.Pod)) },
		DeleteFunc: func(obj any) {
			if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = t.Obj
			}
			if p, ok := obj.(*corev1.Pod); ok {
				a.podGone(p)
			}
		},
	})
	factory.Start(ctx.Done())
	logf("node: %s registered, kubelet API on %s", a.nodeName, ln.Addr())
	<-ctx.Done()

	logf("node: stopping; killing all containers")
	a.mu.Lock()
	all := make([]*podRuntime, 0, len(a.pods))
	for _, p := range a.pods {
		all = append(all, p)
	}
	a.mu.Unlock()
	var wg sync.WaitGroup
	for _, p := range all {
		wg.Add(1)
		go func() { defer wg.Done(); p.kill(2 * time.Second); p.waitStopped(5 * time.Second) }()
	}
	wg.Wait()
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = srv.Shutdown(shutdownCtx)
	return 0
}

func (a *agent) register(ctx context.Context, capacity corev1.ResourceList, port int) error {
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name: a.nodeName,
			Labels: map[string]string{
				"kubernetes.io/hostname": a.nodeName,
				"kubernetes.io/os":       "linux",
				"kubernetes.io/arch":     "amd64",
				"lmeval.local/node":      "true",
			},
		},
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := a.client.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{})
		if err == nil || apierrors.IsAlreadyExists(err) {
			break
		}
		if time.Now().After(deadline) {
			return err
		}
		logf("node: create Node: %v (retrying)", err)
		time.Sleep(500 * time.Millisecond)
	}
	// The TaintNodesByCondition admission plugin taints every new Node not-ready; the node-lifecycle controller
	// would lift it once the Node reports Ready, but that controller is off (it would also taint an idle node
	// whose heartbeats it dislikes), so the agent lifts it itself.
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		n, err := a.client.CoreV1().Nodes().Get(ctx, a.nodeName, metav1.GetOptions{})
		if err != nil {
			return err
		}
		var keep []corev1.Taint
		for _, t := range n.Spec.Taints {
			if !strings.HasPrefix(t.Key, "node.kubernetes.io/") {
				keep = append(keep, t)
			}
		}
		if len(keep) == len(n.Spec.Taints) {
			return nil
		}
		n.Spec.Taints = keep
		_, err = a.client.CoreV1().Nodes().Update(ctx, n, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		return fmt.Errorf("remove not-ready taint: %w", err)
	}
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		n, err := a.client.CoreV1().Nodes().Get(ctx, a.nodeName, metav1.GetOptions{})
		if err != nil {
			return err
		}
		now := metav1.Now()
		n.Status.Capacity = capacity
		n.Status.Allocatable = capacity
		n.Status.Phase = corev1.NodeRunning
		n.Status.Addresses = []corev1.NodeAddress{
			{Type: corev1.NodeInternalIP, Address: "127.0.0.1"},
			{Type: corev1.NodeHostName, Address: a.nodeName},
		}
		n.Status.DaemonEndpoints.KubeletEndpoint.Port = int32(port)
		n.Status.NodeInfo = corev1.NodeSystemInfo{
			MachineID:               "lmeval",
			SystemUUID:              "lmeval",
			BootID:                  strconv.FormatInt(time.Now().UnixNano(), 10),
			KernelVersion:           kernelVersion(),
			OSImage:                 "lm-eval-aas test node (local processes)",
			ContainerRuntimeVersion: "lmcluster://" + k8sVersion,
			KubeletVersion:          k8sVersion,
			OperatingSystem:         "linux",
			Architecture:            "amd64",
		}
		n.Status.Conditions = nodeConditions(now)
		_, err = a.client.CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{})
		return err
	})
}

func nodeConditions(now metav1.Time) []corev1.NodeCondition {
	c := func(t corev1.NodeConditionType, s corev1.ConditionStatus, reason, msg string) corev1.NodeCondition {
		return corev1.NodeCondition{Type: t, Status: s, Reason: reason, Message: msg, LastHeartbeatTime: now, LastTransitionTime: now}
	}
	return []corev1.NodeCondition{
		c(corev1.NodeMemoryPressure, corev1.ConditionFalse, "KubeletHasSufficientMemory", "no memory pressure"),
		c(corev1.NodeDiskPressure, corev1.ConditionFalse, "KubeletHasNoDiskPressure", "no disk pressure"),
		c(corev1.NodePIDPressure, corev1.ConditionFalse, "KubeletHasSufficientPID", "no PID pressure"),
		c(corev1.NodeReady, corev1.ConditionTrue, "KubeletReady", "lmcluster node agent is ready"),
	}
}

// heartbeat keeps the Node's conditions fresh so that anyone reading them sees a live node.
func (a *agent) heartbeat(ctx context.Context) {
	t := time.NewTicker(30 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
			n, err := a.client.CoreV1().Nodes().Get(ctx, a.nodeName, metav1.GetOptions{})
			if err != nil {
				return err
			}
			now := metav1.Now()
			for i := range n.Status.Conditions {
				n.Status.Conditions[i].LastHeartbeatTime = now
			}
			_, err = a.client.CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{})
			return err
		})
		if err != nil && ctx.Err() == nil {
			logf("node: heartbeat: %v", err)
		}
	}
}

// podChanged is called for every add/update of a pod bound to this node.
func (a *agent) podChanged(ctx context.Context, pod *corev1.Pod) {
	a.mu.Lock()
	rt, known := a.pods[pod.UID]
	if !known {
		if pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
			a.mu.Unlock()
			// A pod that finished under an earlier agent: nothing runs, only a deletion may need finishing.
			if pod.DeletionTimestamp != nil {
				go a.finalizeDeletion(ctx, pod)
			}
			return
		}
		rt = newPodRuntime(a, pod)
		a.pods[pod.UID] = rt
		a.byName[pod.Namespace+"/"+pod.Name] = pod.UID
		a.mu.Unlock()
		go rt.run(ctx)
	} else {
		a.mu.Unlock()
	}
	if pod.DeletionTimestamp != nil {
		rt.requestDeletion(ctx, pod)
	}
}

func (a *agent) podGone(pod *corev1.Pod) {
	a.mu.Lock()
	rt := a.pods[pod.UID]
	delete(a.pods, pod.UID)
	if a.byName[pod.Namespace+"/"+pod.Name] == pod.UID {
		delete(a.byName, pod.Namespace+"/"+pod.Name)
	}
	a.mu.Unlock()
	if rt != nil {
		go func() {
			rt.kill(0)
			rt.waitStopped(10 * time.Second)
			_ = os.RemoveAll(rt.dir)
		}()
	}
}

// finalizeDeletion removes a pod whose containers have stopped, as the kubelet does: a delete with grace
// period 0, guarded by the UID so a new pod with the same name is never hit.
func (a *agent) finalizeDeletion(ctx context.Context, pod *corev1.Pod) {
	zero := int64(0)
	uid := pod.UID
	err := a.client.CoreV1().Pods(pod.Namespace).Delete(ctx, pod.Name, metav1.DeleteOptions{
		GracePeriodSeconds: &zero,
		Preconditions:      &metav1.Preconditions{UID: &uid},
	})
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) && ctx.Err() == nil {
		logf("node: delete pod %s/%s: %v", pod.Namespace, pod.Name, err)
	}
}

func (a *agent) lookup(namespace, name string) *podRuntime {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.pods[a.byName[namespace+"/"+name]]
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, time.Now().Format("2006-01-02T15:04:05.000Z07:00")+" "+format+"\n", args...)
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

func kernelVersion() string {
	b, err := os.ReadFile("/proc/sys/kernel/osrelease")
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(b))
}

func podDir(stateDir string, uid types.UID) string {
	return filepath.Join(stateDir, "pods", string(uid))
}
