// Command lmcluster is a multi-call binary that runs a local Kubernetes control plane for lm-eval-aas tests.
//
// Each component runs as its own process (they share global registries such as feature gates, so running
// several in one process races). The subcommand is the first argument, or the name the binary is invoked
// under (a `kubectl` symlink runs kubectl).
package main

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

type subcommand struct {
	help string
	run  func(args []string) int
}

var subcommands = map[string]subcommand{
	"up":                      {"start etcd, API server, controller manager, scheduler and node agent; wait until a Pod runs", runUp},
	"down":                    {"stop the processes started by up (PID files) and remove the state directory", runDown},
	"env":                     {"print the env file written by up", runEnv},
	"token":                   {"mint a ServiceAccount token through the TokenRequest API", runToken},
	"serving-cert":            {"issue a serving certificate for 127.0.0.1 from the cluster's CA (tls.crt, tls.key)", runServingCert},
	"etcd":                    {"embedded etcd server", runEtcd},
	"kube-apiserver":          {"k8s.io/kubernetes kube-apiserver", runAPIServer},
	"kube-controller-manager": {"k8s.io/kubernetes kube-controller-manager", runControllerManager},
	"kube-scheduler":          {"k8s.io/kubernetes kube-scheduler", runScheduler},
	"kubectl":                 {"k8s.io/kubectl", runKubectl},
	"node":                    {"node agent: registers a Node and runs its pods as local processes", runNode},
	"container-init":          {"(internal) set up a container's mounts in a fresh mount namespace, then exec its command", runContainerInit},
}

func main() {
	name := filepath.Base(os.Args[0])
	args := os.Args[1:]
	if _, ok := subcommands[name]; !ok {
		if len(args) == 0 {
			usage()
			os.Exit(2)
		}
		name, args = args[0], args[1:]
	}
	sc, ok := subcommands[name]
	if !ok {
		fmt.Fprintf(os.Stderr, "lmcluster: unknown subcommand %q\n", name)
		usage()
		os.Exit(2)
	}
	// The Kubernetes commands parse os.Args[1:] through cobra; make them see only their own arguments.
	os.Args = append([]string{name}, args...)
	os.Exit(sc.run(args))
}

func usage() {
	names := make([]string, 0, len(subcommands))
	for n := range subcommands {
		names = append(names, n)
	}
	sort.Strings(names)
	var b strings.Builder
	b.WriteString("usage: lmcluster <subcommand> [flags]\n\n")
	for _, n := range names {
		fmt.Fprintf(&b, "  %-24s %s\n", n, subcommands[n].help)
	}
	fmt.Fprint(os.Stderr, b.String())
}
