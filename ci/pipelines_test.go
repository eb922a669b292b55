// Package ci holds the pipeline definitions users drop into their own CI
// (github/, gitlab/), the host dependency installer, benchmarks and the
// end-to-end tests. This test checks the pipeline files with real parsers:
// actionlint for the GitHub Actions workflow, and GitLab CI's keyword rules
// for the GitLab file; and that every recipe and make target they use exists.
package ci

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/rhysd/actionlint"
	"gopkg.in/yaml.v3"
)

func TestGitHubWorkflowPassesActionlint(t *testing.T) {
	path := "github/strata-images.yml"
	src, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	l, err := actionlint.NewLinter(&out, &actionlint.LinterOptions{})
	if err != nil {
		t.Fatal(err)
	}
	errs, err := l.Lint(path, src, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range errs {
		t.Errorf("%s:%d:%d: %s [%s]", path, e.Line, e.Column, e.Message, e.Kind)
	}
	checkUses(t, path, string(src))
}

// gitlabJobKeys are the job keywords of GitLab CI's reference.
var gitlabJobKeys = []string{
	"after_script", "allow_failure", "artifacts", "before_script", "cache", "coverage", "dast_configuration",
	"dependencies", "environment", "extends", "hooks", "id_tokens", "identity", "image", "inherit", "interruptible",
	"manual_confirmation", "needs", "pages", "parallel", "release", "resource_group", "retry", "rules", "run",
	"script", "secrets", "services", "stage", "tags", "timeout", "trigger", "variables", "when",
}

// gitlabGlobalKeys are the keywords that are not jobs.
var gitlabGlobalKeys = []string{"default", "include", "stages", "variables", "workflow", "spec",
	"image", "services", "cache", "before_script", "after_script"}

func TestGitLabPipelineFollowsGitLabKeywords(t *testing.T) {
	path := "gitlab/strata-images.gitlab-ci.yml"
	src, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	dec := yaml.NewDecoder(bytes.NewReader(src))
	if err := dec.Decode(&doc); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	stages, _ := doc["stages"].([]any)
	jobs := 0
	for name, v := range doc {
		if slices.Contains(gitlabGlobalKeys, name) || strings.HasPrefix(name, ".") {
			continue
		}
		jobs++
		job, ok := v.(map[string]any)
		if !ok {
			t.Errorf("%s: job %s is not a mapping", path, name)
			continue
		}
		for k := range job {
			if !slices.Contains(gitlabJobKeys, k) {
				t.Errorf("%s: job %s: %q is not a GitLab CI job keyword", path, name, k)
			}
		}
		script, ok := job["script"].([]any)
		if !ok || len(script) == 0 {
			t.Errorf("%s: job %s has no script list", path, name)
		}
		if st, ok := job["stage"].(string); ok && !slices.Contains(stages, any(st)) {
			t.Errorf("%s: job %s: stage %q is not among stages %v", path, name, st, stages)
		}
		if p, ok := job["parallel"].(map[string]any); ok {
			m, ok := p["matrix"].([]any)
			if !ok || len(m) == 0 {
				t.Errorf("%s: job %s: parallel needs a matrix list", path, name)
			}
		}
		if a, ok := job["artifacts"].(map[string]any); ok {
			if _, ok := a["paths"].([]any); !ok {
				t.Errorf("%s: job %s: artifacts without paths", path, name)
			}
		}
	}
	if jobs == 0 {
		t.Errorf("%s defines no job", path)
	}
	checkUses(t, path, string(src))
}

var (
	recipeRE = regexp.MustCompile(`images/[a-z0-9.-]+\.yaml`)
	makeRE   = regexp.MustCompile(`(?m)^\s*(?:-\s*|run:\s*)?make ([a-z-]+)`)
)

// checkUses: every recipe named exists, and every make target the
// pipeline runs exists in the Makefile (make -n succeeds).
func checkUses(t *testing.T, path, src string) {
	t.Helper()
	recipes := recipeRE.FindAllString(src, -1)
	if len(recipes) < 3 {
		t.Errorf("%s names %d recipes; the matrix must cover every datastore", path, len(recipes))
	}
	for _, r := range recipes {
		if _, err := os.Stat(filepath.Join("..", r)); err != nil {
			t.Errorf("%s: recipe %s does not exist", path, r)
		}
	}
	for _, m := range makeRE.FindAllStringSubmatch(src, -1) {
		target := m[1]
		cmd := exec.Command("make", "-n", target, "RECIPE=images/debian-minimal.yaml")
		cmd.Dir = ".."
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("%s runs `make %s`, which the Makefile does not have: %v\n%s", path, target, err, out)
		}
	}
}
