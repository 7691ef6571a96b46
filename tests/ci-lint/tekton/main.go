// Command tekton-lint checks Tekton v1 Tasks, Pipelines and PipelineRuns with Tekton's own validation: each YAML
// document is decoded strictly (an unknown or duplicated field is an error, as the API server's strict field
// validation makes it), defaulted and validated by github.com/tektoncd/pipeline's SetDefaults and Validate, the
// code its admission webhook runs. Across the files given, a Pipeline's task that names one of those Tasks
// (taskRef.name) must pass every param it requires and no param it does not declare, and bind every workspace it
// requires and none it does not declare; a PipelineRun that names one of those Pipelines likewise.
//
//	tekton-lint FILE...    prints "ok FILE" or the errors, exits 1 when any document is invalid
package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	v1 "github.com/tektoncd/pipeline/pkg/apis/pipeline/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"knative.dev/pkg/apis"
	"sigs.k8s.io/yaml"
)

type fileError struct {
	file string
	err  error
}

func (e fileError) Error() string { return e.err.Error() }

type document struct {
	file string
	kind string
	name string
	obj  any
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: tekton-lint FILE...")
		os.Exit(2)
	}
	ctx := apis.WithinCreate(context.Background())
	var docs []document
	errs := map[string][]error{}
	for _, file := range os.Args[1:] {
		found, fileErrs := check(ctx, file)
		docs = append(docs, found...)
		errs[file] = append(errs[file], fileErrs...)
	}
	for _, err := range crossCheck(docs) {
		errs[err.file] = append(errs[err.file], err)
	}
	failed := false
	for _, file := range os.Args[1:] {
		for _, err := range errs[file] {
			fmt.Printf("%s: %v\n", file, err)
		}
		if len(errs[file]) == 0 {
			fmt.Printf("ok %s\n", file)
		}
		failed = failed || len(errs[file]) > 0
	}
	if failed {
		os.Exit(1)
	}
}

// check decodes, defaults and validates every document of file.
func check(ctx context.Context, file string) ([]document, []error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, []error{err}
	}
	var docs []document
	var errs []error
	reader := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	for n := 1; ; n++ {
		raw, err := reader.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return docs, append(errs, err)
		}
		if len(bytes.TrimSpace(raw)) == 0 {
			n--
			continue
		}
		doc, err := validate(ctx, raw)
		if err != nil {
			errs = append(errs, fmt.Errorf("document %d: %w", n, err))
		}
		if doc.obj != nil {
			doc.file = file
			docs = append(docs, doc)
		}
	}
	if len(docs) == 0 && len(errs) == 0 {
		errs = append(errs, errors.New("no Tekton document"))
	}
	return docs, errs
}

func validate(ctx context.Context, raw []byte) (document, error) {
	var meta struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
	}
	if err := yaml.Unmarshal(raw, &meta); err != nil {
		return document{}, err
	}
	if meta.APIVersion != "tekton.dev/v1" {
		return document{}, fmt.Errorf("apiVersion %q: expected tekton.dev/v1", meta.APIVersion)
	}
	type checked interface {
		apis.Validatable
		apis.Defaultable
	}
	var obj checked
	var name func() string
	switch meta.Kind {
	case "Task":
		t := &v1.Task{}
		obj, name = t, func() string { return t.Name }
	case "Pipeline":
		p := &v1.Pipeline{}
		obj, name = p, func() string { return p.Name }
	case "PipelineRun":
		r := &v1.PipelineRun{}
		obj, name = r, func() string { return r.Name }
	case "TaskRun":
		r := &v1.TaskRun{}
		obj, name = r, func() string { return r.Name }
	default:
		return document{}, fmt.Errorf("kind %q: expected Task, Pipeline, PipelineRun or TaskRun", meta.Kind)
	}
	if err := yaml.UnmarshalStrict(raw, obj); err != nil {
		return document{}, fmt.Errorf("%s: %w", meta.Kind, err)
	}
	// The API server names a generateName object before the webhook sees it.
	if m, ok := obj.(interface{ GetObjectMeta() metav1.Object }); ok {
		if meta := m.GetObjectMeta(); meta.GetName() == "" && meta.GetGenerateName() != "" {
			meta.SetName(meta.GetGenerateName() + "abcde")
		}
	}
	obj.SetDefaults(ctx)
	doc := document{kind: meta.Kind, name: name(), obj: obj}
	if err := obj.Validate(ctx); err != nil {
		return doc, fmt.Errorf("%s %s: %w", meta.Kind, name(), err)
	}
	return doc, nil
}

// crossCheck matches params and workspaces between the documents that name each other.
func crossCheck(docs []document) []fileError {
	tasks := map[string]*v1.Task{}
	pipelines := map[string]*v1.Pipeline{}
	for _, d := range docs {
		switch o := d.obj.(type) {
		case *v1.Task:
			tasks[o.Name] = o
		case *v1.Pipeline:
			pipelines[o.Name] = o
		}
	}
	var errs []fileError
	add := func(file string, found []error) {
		for _, err := range found {
			errs = append(errs, fileError{file, err})
		}
	}
	for _, d := range docs {
		switch o := d.obj.(type) {
		case *v1.Pipeline:
			for _, pt := range append(append([]v1.PipelineTask{}, o.Spec.Tasks...), o.Spec.Finally...) {
				if pt.TaskRef == nil || pt.TaskRef.Resolver != "" {
					continue
				}
				task, ok := tasks[pt.TaskRef.Name]
				if !ok {
					continue
				}
				where := fmt.Sprintf("Pipeline %s, task %s (Task %s)", o.Name, pt.Name, task.Name)
				add(d.file, match(where, task.Spec.Params, pt.Params, workspaceNames(task.Spec.Workspaces),
					boundNames(pt.Workspaces)))
			}
		case *v1.PipelineRun:
			if o.Spec.PipelineRef == nil || o.Spec.PipelineRef.Resolver != "" {
				continue
			}
			pipeline, ok := pipelines[o.Spec.PipelineRef.Name]
			if !ok {
				continue
			}
			declared := map[string]bool{}
			for _, w := range pipeline.Spec.Workspaces {
				declared[w.Name] = !w.Optional
			}
			bound := map[string]bool{}
			for _, w := range o.Spec.Workspaces {
				bound[w.Name] = true
			}
			where := fmt.Sprintf("PipelineRun %s (Pipeline %s)", d.name, pipeline.Name)
			add(d.file, match(where, pipeline.Spec.Params, o.Spec.Params, declared, bound))
		}
	}
	return errs
}

func workspaceNames(ws []v1.WorkspaceDeclaration) map[string]bool {
	names := map[string]bool{}
	for _, w := range ws {
		names[w.Name] = !w.Optional
	}
	return names
}

func boundNames(ws []v1.WorkspacePipelineTaskBinding) map[string]bool {
	names := map[string]bool{}
	for _, w := range ws {
		names[w.Name] = true
	}
	return names
}

// match: declared maps a workspace name to whether it is required.
func match(where string, specs v1.ParamSpecs, params v1.Params, declared, bound map[string]bool) []error {
	var errs []error
	passed := map[string]bool{}
	for _, p := range params {
		passed[p.Name] = true
	}
	known := map[string]bool{}
	for _, s := range specs {
		known[s.Name] = true
		if s.Default == nil && !passed[s.Name] {
			errs = append(errs, fmt.Errorf("%s: param %q is required and not passed", where, s.Name))
		}
	}
	for _, p := range params {
		if !known[p.Name] {
			errs = append(errs, fmt.Errorf("%s: param %q is not declared", where, p.Name))
		}
	}
	for name, required := range declared {
		if required && !bound[name] {
			errs = append(errs, fmt.Errorf("%s: workspace %q is required and not bound", where, name))
		}
	}
	for name := range bound {
		if _, ok := declared[name]; !ok {
			errs = append(errs, fmt.Errorf("%s: workspace %q is not declared", where, name))
		}
	}
	return errs
}
