package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	podresource "k8s.io/kubernetes/pkg/api/v1/resource"
	"k8s.io/kubernetes/third_party/forked/golang/expansion"
)

// envList keeps variables in first-definition order while later definitions override the value.
type envList struct {
	order []string
	vals  map[string]string
}

func (e *envList) set(k, v string) {
	if e.vals == nil {
		e.vals = map[string]string{}
	}
	if _, ok := e.vals[k]; !ok {
		e.order = append(e.order, k)
	}
	e.vals[k] = v
}

func (e *envList) list() []string {
	out := make([]string, 0, len(e.order))
	for _, k := range e.order {
		out = append(out, k+"="+e.vals[k])
	}
	return out
}

// containerEnv builds a container's environment as the kubelet would: service variables for the API server,
// then envFrom, then env (with $(VAR) expansion and valueFrom). There is no image, so the base is the agent's
// PATH (with LMEVAL_CLUSTER_EXTRA_PATH first), HOME and HOSTNAME.
func (r *podRuntime) containerEnv(ctx context.Context, c *corev1.Container) ([]string, error) {
	var env envList
	path := os.Getenv("PATH")
	if r.a.extraPath != "" {
		path = r.a.extraPath + ":" + path
	}
	// Last, so it never shadows anything: kubectl (and lmcluster) for in-cluster scripts.
	if self, err := os.Executable(); err == nil {
		path += ":" + filepath.Dir(self)
	}
	env.set("PATH", path)
	env.set("HOME", envOr("HOME", "/root"))
	env.set("HOSTNAME", r.pod.Name)
	port := strconv.Itoa(r.a.apiPort)
	service := map[string]string{
		"KUBERNETES_SERVICE_HOST":       "127.0.0.1",
		"KUBERNETES_SERVICE_PORT":       port,
		"KUBERNETES_SERVICE_PORT_HTTPS": port,
		"KUBERNETES_PORT":               "tcp://127.0.0.1:" + port,
	}
	for _, k := range []string{"KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT", "KUBERNETES_SERVICE_PORT_HTTPS", "KUBERNETES_PORT"} {
		env.set(k, service[k])
	}

	for _, from := range c.EnvFrom {
		var data map[string]string
		switch {
		case from.ConfigMapRef != nil:
			cm, err := r.a.client.CoreV1().ConfigMaps(r.pod.Namespace).Get(ctx, from.ConfigMapRef.Name, metav1.GetOptions{})
			if apierrors.IsNotFound(err) && from.ConfigMapRef.Optional != nil && *from.ConfigMapRef.Optional {
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("envFrom configmap %q: %w", from.ConfigMapRef.Name, err)
			}
			data = cm.Data
		case from.SecretRef != nil:
			s, err := r.a.client.CoreV1().Secrets(r.pod.Namespace).Get(ctx, from.SecretRef.Name, metav1.GetOptions{})
			if apierrors.IsNotFound(err) && from.SecretRef.Optional != nil && *from.SecretRef.Optional {
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("envFrom secret %q: %w", from.SecretRef.Name, err)
			}
			data = map[string]string{}
			for k, v := range s.Data {
				data[k] = string(v)
			}
		}
		for k, v := range data {
			if len(validation.IsEnvVarName(from.Prefix+k)) == 0 {
				env.set(from.Prefix+k, v)
			}
		}
	}

	for _, ev := range c.Env {
		if ev.ValueFrom == nil {
			env.set(ev.Name, expansion.Expand(ev.Value, expansion.MappingFuncFor(env.vals, service)))
			continue
		}
		v, skip, err := r.envValueFrom(ctx, c, ev.ValueFrom)
		if err != nil {
			return nil, fmt.Errorf("env %s: %w", ev.Name, err)
		}
		if !skip {
			env.set(ev.Name, v)
		}
	}
	return env.list(), nil
}

func (r *podRuntime) envValueFrom(ctx context.Context, c *corev1.Container, from *corev1.EnvVarSource) (value string, skip bool, err error) {
	switch {
	case from.FieldRef != nil:
		v, err := r.fieldValue(from.FieldRef.FieldPath)
		return v, false, err
	case from.ResourceFieldRef != nil:
		name := from.ResourceFieldRef.ContainerName
		if name == "" {
			name = c.Name
		}
		v, err := podresource.ExtractResourceValueByContainerName(from.ResourceFieldRef, r.pod, name)
		return v, false, err
	case from.ConfigMapKeyRef != nil:
		ref := from.ConfigMapKeyRef
		optional := ref.Optional != nil && *ref.Optional
		cm, err := r.a.client.CoreV1().ConfigMaps(r.pod.Namespace).Get(ctx, ref.Name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) && optional {
			return "", true, nil
		}
		if err != nil {
			return "", false, fmt.Errorf("configmap %q: %w", ref.Name, err)
		}
		v, ok := cm.Data[ref.Key]
		if !ok {
			if b, okb := cm.BinaryData[ref.Key]; okb {
				return string(b), false, nil
			}
			if optional {
				return "", true, nil
			}
			return "", false, fmt.Errorf("configmap %q has no key %q", ref.Name, ref.Key)
		}
		return v, false, nil
	case from.SecretKeyRef != nil:
		ref := from.SecretKeyRef
		optional := ref.Optional != nil && *ref.Optional
		s, err := r.a.client.CoreV1().Secrets(r.pod.Namespace).Get(ctx, ref.Name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) && optional {
			return "", true, nil
		}
		if err != nil {
			return "", false, fmt.Errorf("secret %q: %w", ref.Name, err)
		}
		v, ok := s.Data[ref.Key]
		if !ok {
			if optional {
				return "", true, nil
			}
			return "", false, fmt.Errorf("secret %q has no key %q", ref.Name, ref.Key)
		}
		return string(v), false, nil
	}
	return "", false, fmt.Errorf("unsupported valueFrom")
}

// expandArgs expands $(VAR) references in command and args against the container's environment.
func expandArgs(command, args []string, env []string) []string {
	vals := map[string]string{}
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		vals[k] = v
	}
	mapping := expansion.MappingFuncFor(vals)
	out := make([]string, 0, len(command)+len(args))
	for _, s := range append(append([]string{}, command...), args...) {
		out = append(out, expansion.Expand(s, mapping))
	}
	return out
}
