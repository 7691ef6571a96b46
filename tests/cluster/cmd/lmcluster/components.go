package main

import (
	"os"
	_ "time/tzdata" // CronJob time zones, as in the upstream mains

	"k8s.io/component-base/cli"
	"k8s.io/component-base/logs"
	_ "k8s.io/component-base/logs/json/register"
	_ "k8s.io/component-base/metrics/prometheus/clientgo"
	_ "k8s.io/component-base/metrics/prometheus/version"
	kubectlcmd "k8s.io/kubectl/pkg/cmd"
	kubectlutil "k8s.io/kubectl/pkg/cmd/util"
	apiserver "k8s.io/kubernetes/cmd/kube-apiserver/app"
	controllermanager "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	scheduler "k8s.io/kubernetes/cmd/kube-scheduler/app"
	"k8s.io/kubernetes/pkg/controller/job"
)

// The upstream mains are three lines each; these mirror them.

func runAPIServer(_ []string) int {
	return cli.Run(apiserver.NewAPIServerCommand())
}

func runControllerManager(_ []string) int {
	// The job controller waits DefaultJobPodFailureBackOff (10 s, doubling) before replacing a failed pod.
	// Tests of failure paths should not wait that long; the variable is exported for tests upstream.
	if d := durationFromEnv("LMEVAL_CLUSTER_JOB_BACKOFF", "1s"); d > 0 {
		job.DefaultJobPodFailureBackOff = d
		job.MaxJobPodFailureBackOff = 10 * d
	}
	return cli.Run(controllermanager.NewControllerManagerCommand())
}

func runScheduler(_ []string) int {
	return cli.Run(scheduler.NewSchedulerCommand())
}

func runKubectl(_ []string) int {
	logs.GlogSetter(kubectlcmd.GetLogVerbosity(os.Args)) // nolint:errcheck
	command := kubectlcmd.NewDefaultKubectlCommand()
	if err := cli.RunNoErrOutput(command); err != nil {
		kubectlutil.CheckErr(err)
	}
	return 0
}
