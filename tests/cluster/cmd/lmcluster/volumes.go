package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	podresource "k8s.io/kubernetes/pkg/api/v1/resource"
	"k8s.io/kubernetes/pkg/fieldpath"
)

// unsupportedError marks a pod this agent can never run (e.g. a CSI volume); the pod fails at once instead of
// waiting forever.
type unsupportedError struct{ msg string }

func (e *unsupportedError) Error() string { return e.msg }

// setupVolumes materialises every volume of the pod on the host and records where each one lives.
// It is idempotent, so a failed attempt (a Secret that does not exist yet) can simply be retried.
func (r *podRuntime) setupVolumes(ctx context.Context) error {
	for _, d := range []string{"volumes", "pids", "logs", "specs"} {
		if err := os.MkdirAll(filepath.Join(r.dir, d), 0o755); err != nil {
			return err
		}
	}
	paths := map[string]string{}
	for i := range r.pod.Spec.Volumes {
		v := &r.pod.Spec.Volumes[i]
		dir := filepath.Join(r.dir, "volumes", v.Name)
		var err error
		switch {
		case v.EmptyDir != nil:
			err = os.MkdirAll(dir, 0o777)
			paths[v.Name] = dir
		case v.HostPath != nil:
			paths[v.Name] = v.HostPath.Path
			err = ensureHostPath(v.HostPath.Path, v.HostPath.Type)
		case v.PersistentVolumeClaim != nil:
			paths[v.Name], err = r.claimPath(ctx, v.PersistentVolumeClaim.ClaimName)
		case v.ConfigMap != nil:
			paths[v.Name] = dir
			err = r.writeFiles(dir, func(files map[string]fileContent) error {
				return r.configMapFiles(ctx, files, v.ConfigMap.Name, v.ConfigMap.Items, v.ConfigMap.Optional, v.ConfigMap.DefaultMode)
			})
		case v.Secret != nil:
			paths[v.Name] = dir
			err = r.writeFiles(dir, func(files map[string]fileContent) error {
				return r.secretFiles(ctx, files, v.Secret.SecretName, v.Secret.Items, v.Secret.Optional, v.Secret.DefaultMode)
			})
		case v.DownwardAPI != nil:
			paths[v.Name] = dir
			err = r.writeFiles(dir, func(files map[string]fileContent) error {
				return r.downwardAPIFiles(files, v.DownwardAPI.Items, v.DownwardAPI.DefaultMode)
			})
		case v.Projected != nil:
			paths[v.Name] = dir
			err = r.writeFiles(dir, func(files map[string]fileContent) error { return r.projectedFiles(ctx, files, v.Projected) })
		default:
			return &unsupportedError{fmt.Sprintf("volume %q: only emptyDir, hostPath, persistentVolumeClaim (hostPath or local PV), configMap, secret, downwardAPI and projected volumes are supported", v.Name)}
		}
		if err != nil {
			return fmt.Errorf("volume %q: %w", v.Name, err)
		}
	}
	r.mu.Lock()
	r.volumePaths = paths
	r.mu.Unlock()
	return nil
}

func ensureHostPath(path string, t *corev1.HostPathType) error {
	kind := corev1.HostPathUnset
	if t != nil {
		kind = *t
	}
	switch kind {
	case corev1.HostPathFileOrCreate:
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return err
		}
		f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY, 0o644)
		if err != nil {
			return err
		}
		return f.Close()
	case corev1.HostPathFile, corev1.HostPathDirectory, corev1.HostPathSocket, corev1.HostPathCharDev, corev1.HostPathBlockDev:
		_, err := os.Stat(path)
		return err
	default: // unset or DirectoryOrCreate: like a container runtime, create a missing directory
		return os.MkdirAll(path, 0o755)
	}
}

// claimPath resolves a PVC to the host directory of its bound PersistentVolume.
func (r *podRuntime) claimPath(ctx context.Context, claim string) (string, error) {
	pvc, err := r.a.client.CoreV1().PersistentVolumeClaims(r.pod.Namespace).Get(ctx, claim, metav1.GetOptions{})
	if err != nil {
		return "", err
	}
	if pvc.Spec.VolumeName == "" || pvc.Status.Phase != corev1.ClaimBound {
		return "", fmt.Errorf("persistentvolumeclaim %q is not bound yet", claim)
	}
	pv, err := r.a.client.CoreV1().PersistentVolumes().Get(ctx, pvc.Spec.VolumeName, metav1.GetOptions{})
	if err != nil {
		return "", err
	}
	switch {
	case pv.Spec.HostPath != nil:
		return pv.Spec.HostPath.Path, ensureHostPath(pv.Spec.HostPath.Path, pv.Spec.HostPath.Type)
	case pv.Spec.Local != nil:
		return pv.Spec.Local.Path, os.MkdirAll(pv.Spec.Local.Path, 0o755)
	default:
		return "", &unsupportedError{fmt.Sprintf("persistentvolume %q: only hostPath and local volumes are supported", pv.Name)}
	}
}

type fileContent struct {
	data []byte
	mode os.FileMode
}

// writeFiles collects a volume's files and (re)writes the directory so a retry never leaves stale files.
func (r *podRuntime) writeFiles(dir string, collect func(map[string]fileContent) error) error {
	files := map[string]fileContent{}
	if err := collect(files); err != nil {
		return err
	}
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for rel, fc := range files {
		p := filepath.Join(dir, filepath.Clean("/"+rel))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(p, fc.data, fc.mode); err != nil {
			return err
		}
		if err := os.Chmod(p, fc.mode); err != nil {
			return err
		}
	}
	return nil
}

func fileMode(item *int32, def *int32) os.FileMode {
	switch {
	case item != nil:
		return os.FileMode(*item)
	case def != nil:
		return os.FileMode(*def)
	default:
		return 0o644
	}
}

func addKeys(files map[string]fileContent, data map[string][]byte, items []corev1.KeyToPath, optional bool, defMode *int32, what string) error {
	if len(items) == 0 {
		for k, v := range data {
			files[k] = fileContent{v, fileMode(nil, defMode)}
		}
		return nil
	}
	for _, it := range items {
		v, ok := data[it.Key]
		if !ok {
			if optional {
				continue
			}
			return fmt.Errorf("%s has no key %q", what, it.Key)
		}
		files[it.Path] = fileContent{v, fileMode(it.Mode, defMode)}
	}
	return nil
}

func (r *podRuntime) configMapFiles(ctx context.Context, files map[string]fileContent, name string, items []corev1.KeyToPath, optional *bool, defMode *int32) error {
	cm, err := r.a.client.CoreV1().ConfigMaps(r.pod.Namespace).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) && optional != nil && *optional {
		return nil
	}
	if err != nil {
		return err
	}
	data := map[string][]byte{}
	for k, v := range cm.Data {
		data[k] = []byte(v)
	}
	for k, v := range cm.BinaryData {
		data[k] = v
	}
	return addKeys(files, data, items, optional != nil && *optional, defMode, "configmap "+name)
}

func (r *podRuntime) secretFiles(ctx context.Context, files map[string]fileContent, name string, items []corev1.KeyToPath, optional *bool, defMode *int32) error {
	s, err := r.a.client.CoreV1().Secrets(r.pod.Namespace).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) && optional != nil && *optional {
		return nil
	}
	if err != nil {
		return err
	}
	return addKeys(files, s.Data, items, optional != nil && *optional, defMode, "secret "+name)
}

func (r *podRuntime) downwardAPIFiles(files map[string]fileContent, items []corev1.DownwardAPIVolumeFile, defMode *int32) error {
	for _, it := range items {
		var v string
		var err error
		switch {
		case it.FieldRef != nil:
			v, err = r.fieldValue(it.FieldRef.FieldPath)
		case it.ResourceFieldRef != nil:
			v, err = podresource.ExtractResourceValueByContainerName(it.ResourceFieldRef, r.pod, it.ResourceFieldRef.ContainerName)
		}
		if err != nil {
			return err
		}
		files[it.Path] = fileContent{[]byte(v), fileMode(it.Mode, defMode)}
	}
	return nil
}

func (r *podRuntime) projectedFiles(ctx context.Context, files map[string]fileContent, p *corev1.ProjectedVolumeSource) error {
	for _, src := range p.Sources {
		var err error
		switch {
		case src.ConfigMap != nil:
			err = r.configMapFiles(ctx, files, src.ConfigMap.Name, src.ConfigMap.Items, src.ConfigMap.Optional, p.DefaultMode)
		case src.Secret != nil:
			err = r.secretFiles(ctx, files, src.Secret.Name, src.Secret.Items, src.Secret.Optional, p.DefaultMode)
		case src.DownwardAPI != nil:
			err = r.downwardAPIFiles(files, src.DownwardAPI.Items, p.DefaultMode)
		case src.ServiceAccountToken != nil:
			var tok string
			tok, err = r.serviceAccountToken(ctx, src.ServiceAccountToken)
			files[src.ServiceAccountToken.Path] = fileContent{[]byte(tok), fileMode(nil, p.DefaultMode)}
		default:
			return &unsupportedError{"projected volume: only configMap, secret, downwardAPI and serviceAccountToken sources are supported"}
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// serviceAccountToken asks the API server for a token bound to this pod, as the kubelet does. The token is not
// refreshed: it lives for the requested time (an hour by default), which outlasts any test.
func (r *podRuntime) serviceAccountToken(ctx context.Context, src *corev1.ServiceAccountTokenProjection) (string, error) {
	sa := r.pod.Spec.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	exp := int64(3600)
	if src.ExpirationSeconds != nil {
		exp = *src.ExpirationSeconds
	}
	tr := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
		ExpirationSeconds: &exp,
		BoundObjectRef:    &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: r.pod.Name, UID: r.pod.UID},
	}}
	if src.Audience != "" {
		tr.Spec.Audiences = []string{src.Audience}
	}
	out, err := r.a.client.CoreV1().ServiceAccounts(r.pod.Namespace).CreateToken(ctx, sa, tr, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("token for serviceaccount %q: %w", sa, err)
	}
	return out.Status.Token, nil
}

// fieldValue resolves a downward-API field path the way the kubelet does.
func (r *podRuntime) fieldValue(path string) (string, error) {
	switch path {
	case "spec.nodeName":
		return r.a.nodeName, nil
	case "spec.serviceAccountName":
		return r.pod.Spec.ServiceAccountName, nil
	case "status.hostIP", "status.podIP", "status.hostIPs", "status.podIPs":
		return "127.0.0.1", nil
	}
	if strings.HasPrefix(path, "metadata.") {
		return fieldpath.ExtractFieldPathAsString(r.pod, path)
	}
	return "", fmt.Errorf("unsupported fieldPath %q", path)
}
