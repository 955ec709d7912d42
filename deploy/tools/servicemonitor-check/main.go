// servicemonitor-check validates ServiceMonitor manifests against the
// Prometheus Operator's own API types: every field must exist in
// monitoring.coreos.com/v1 (strict decoding, so a misspelt or misplaced
// field is an error) and have the right type. The ServiceMonitor is a
// custom resource, so the Kubernetes schema validator has no schema for it.
//
//	go run . FILE...
package main

import (
	"bytes"
	"fmt"
	"os"
	"strings"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"sigs.k8s.io/yaml"
)

func check(path string) []string {
	raw, err := os.ReadFile(path)
	if err != nil {
		return []string{err.Error()}
	}
	var problems []string
	for i, doc := range bytes.Split(raw, []byte("\n---")) {
		if len(bytes.TrimSpace(stripComments(doc))) == 0 {
			continue
		}
		where := fmt.Sprintf("%s (document %d)", path, i+1)
		var sm monitoringv1.ServiceMonitor
		if err := yaml.UnmarshalStrict(doc, &sm); err != nil {
			problems = append(problems, fmt.Sprintf("%s: %v", where, err))
			continue
		}
		if sm.APIVersion != "monitoring.coreos.com/v1" || sm.Kind != "ServiceMonitor" {
			problems = append(problems, fmt.Sprintf("%s: not a monitoring.coreos.com/v1 ServiceMonitor (%s %s)", where, sm.APIVersion, sm.Kind))
			continue
		}
		if sm.Name == "" {
			problems = append(problems, where+": metadata.name is empty")
		}
		if len(sm.Spec.Selector.MatchLabels) == 0 && len(sm.Spec.Selector.MatchExpressions) == 0 {
			problems = append(problems, where+": spec.selector selects nothing")
		}
		if len(sm.Spec.Endpoints) == 0 {
			problems = append(problems, where+": spec.endpoints is empty")
		}
		for j, ep := range sm.Spec.Endpoints {
			if (ep.Port == "") == (ep.TargetPort == nil) {
				problems = append(problems, fmt.Sprintf("%s: spec.endpoints[%d] needs exactly one of port and targetPort", where, j))
			}
		}
	}
	return problems
}

// stripComments drops comment-only lines, so a document of comments counts as empty.
func stripComments(doc []byte) []byte {
	var out []string
	for _, line := range strings.Split(string(doc), "\n") {
		if !strings.HasPrefix(strings.TrimSpace(line), "#") {
			out = append(out, line)
		}
	}
	return []byte(strings.Join(out, "\n"))
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: servicemonitor-check FILE...")
		os.Exit(2)
	}
	failed := false
	for _, path := range os.Args[1:] {
		if problems := check(path); len(problems) > 0 {
			failed = true
			for _, p := range problems {
				fmt.Fprintln(os.Stderr, "FAIL", p)
			}
		} else {
			fmt.Println("ok  ", path, "(monitoring.coreos.com/v1 ServiceMonitor, strict)")
		}
	}
	if failed {
		os.Exit(1)
	}
}
