package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

// runToken mints a ServiceAccount token through the TokenRequest API, so a test can act as that identity
// under RBAC: `lmcluster token -n NAMESPACE SERVICEACCOUNT`.
func runToken(args []string) int {
	fs := flag.NewFlagSet("token", flag.ExitOnError)
	kubeconfig := fs.String("kubeconfig", os.Getenv("KUBECONFIG"), "admin kubeconfig (env KUBECONFIG)")
	namespace := fs.String("n", "default", "namespace of the ServiceAccount")
	duration := fs.Duration("duration", time.Hour, "token lifetime (at least 10m)")
	audience := fs.String("audience", "", "token audience (default: the API server's)")
	fs.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: lmcluster token [-n NAMESPACE] [-duration 1h] [-audience AUD] SERVICEACCOUNT")
		fs.PrintDefaults()
	}
	_ = fs.Parse(args)
	if fs.NArg() != 1 || *kubeconfig == "" {
		fs.Usage()
		return 2
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
	if err != nil {
		fmt.Fprintf(os.Stderr, "token: %v\n", err)
		return 1
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		fmt.Fprintf(os.Stderr, "token: %v\n", err)
		return 1
	}
	secs := int64(duration.Seconds())
	tr := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &secs}}
	if *audience != "" {
		tr.Spec.Audiences = []string{*audience}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := client.CoreV1().ServiceAccounts(*namespace).CreateToken(ctx, fs.Arg(0), tr, metav1.CreateOptions{})
	if err != nil {
		fmt.Fprintf(os.Stderr, "token: %v\n", err)
		return 1
	}
	fmt.Println(out.Status.Token)
	return 0
}
