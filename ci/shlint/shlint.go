// Package shlint finds the repository's own shell scripts and checks them
// for two bugs shellcheck does not flag:
//
//   - a function, a trap or a whole script whose last command is an &&
//     list. When the list's test is false, that false becomes the
//     function's (or trap's, or script's) exit status, and under set -e
//     the script stops with 1 although everything worked — the way
//     ci/deps.sh failed every first run after a successful install
//     (issue 11);
//   - an ERR trap without set -E (errtrace): bash does not run it for a
//     command failing inside a function, so under set -e the script exits
//     there without the trap's clean-up — the way ci/openstack/start.sh
//     left keystone, glance-api and trove-api running.
//
// Scripts are found by their shebang, not by their name.
//
// It only reads; the tests in ci/ (and builder/build, for the scripts the
// builder writes into images) call it next to shellcheck. It must not
// grow into a shell linter of its own: what shellcheck checks stays there.
package shlint

import (
	"bytes"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"

	"mvdan.cc/sh/v3/syntax"
)

// Script is one shell script and the shell it is written for.
type Script struct {
	Path  string // as given to Find
	Shell string // "bash" or "sh"
}

// Find returns the shell scripts among files (paths relative to dir): a
// file whose first line is a #! line running sh or bash (directly or
// through env), and DIB's environment.d/*.bash files, which are sourced by
// bash and carry no shebang.
func Find(dir string, files []string) ([]Script, error) {
	var out []Script
	for _, f := range files {
		p := filepath.Join(dir, f)
		fi, err := os.Lstat(p)
		if err != nil {
			if os.IsNotExist(err) {
				continue // listed by git but deleted in the work tree
			}
			return nil, err
		}
		if !fi.Mode().IsRegular() {
			continue
		}
		if path.Base(path.Dir(filepath.ToSlash(f))) == "environment.d" && strings.HasSuffix(f, ".bash") {
			out = append(out, Script{Path: f, Shell: "bash"})
			continue
		}
		if sh := shebangShell(p); sh != "" {
			out = append(out, Script{Path: f, Shell: sh})
		}
	}
	return out, nil
}

// shebangShell reads the first line of a file: "bash", "sh" or "".
func shebangShell(p string) string {
	fh, err := os.Open(p)
	if err != nil {
		return ""
	}
	defer fh.Close()
	buf := make([]byte, 128)
	n, _ := fh.Read(buf)
	line, _, _ := bytes.Cut(buf[:n], []byte("\n"))
	rest, ok := bytes.CutPrefix(line, []byte("#!"))
	if !ok {
		return ""
	}
	f := strings.Fields(string(rest))
	if len(f) == 0 {
		return ""
	}
	prog := path.Base(f[0])
	if prog == "env" && len(f) > 1 {
		prog = path.Base(f[1])
	}
	switch prog {
	case "bash":
		return "bash"
	case "sh", "dash":
		return "sh"
	}
	return ""
}

// Finding is one problem in one script.
type Finding struct {
	File string
	Line int
	// What is where it is: "function cleanup", "trap EXIT", "the script",
	// "trap ERR".
	What string
	// Problem says what is wrong and what to do instead.
	Problem string
}

const (
	lastAndList   = "its last command is an && list; when the list's test is false, that becomes the exit status (under set -e the script then exits 1): use if ...; then ...; fi"
	errNoErrtrace = "bash runs an ERR trap for a failure inside a function only with set -E (errtrace), and under set -e the script exits there without it: add set -E, or clean up in an EXIT trap"
)

func (f Finding) String() string {
	return fmt.Sprintf("%s:%d: %s: %s", f.File, f.Line, f.What, f.Problem)
}

// Check parses src (a script for shell "bash" or "sh") and reports every
// function, trap action and the script itself whose last command is an &&
// list (looking into the last command of blocks, subshells, if and case
// branches and loop bodies), and an ERR trap in a script that never sets
// -E.
func Check(name, shell string, src []byte) ([]Finding, error) {
	lang := syntax.LangBash
	if shell == "sh" {
		lang = syntax.LangPOSIX
	}
	p := syntax.NewParser(syntax.Variant(lang))
	f, err := p.Parse(bytes.NewReader(src), name)
	if err != nil {
		return nil, err
	}
	var out []Finding
	report := func(s *syntax.Stmt, what string) {
		if and := endsInAnd(s); and != nil {
			out = append(out, Finding{File: name, Line: int(and.Pos().Line()), What: what, Problem: lastAndList})
		}
	}
	report(last(f.Stmts), "the script")
	var walkErr error
	var errTraps []*syntax.CallExpr
	errtrace := false
	syntax.Walk(f, func(n syntax.Node) bool {
		switch n := n.(type) {
		case *syntax.FuncDecl:
			if n.Name != nil {
				report(n.Body, "function "+n.Name.Value)
			}
		case *syntax.CallExpr:
			if setsErrtrace(n) {
				errtrace = true
			}
			action, signals, ok := trapArgs(n, src)
			if !ok {
				return true
			}
			if slices.Contains(strings.Fields(signals), "ERR") {
				errTraps = append(errTraps, n)
			}
			tf, err := syntax.NewParser(syntax.Variant(lang)).Parse(strings.NewReader(action), name)
			if err != nil {
				walkErr = fmt.Errorf("%s:%d: trap action: %w", name, n.Pos().Line(), err)
				return false
			}
			if and := endsInAnd(last(tf.Stmts)); and != nil {
				out = append(out, Finding{File: name, Line: int(n.Pos().Line()), What: "trap " + signals, Problem: lastAndList})
			}
		}
		return true
	})
	if !errtrace {
		for _, n := range errTraps {
			out = append(out, Finding{File: name, Line: int(n.Pos().Line()), What: "trap ERR", Problem: errNoErrtrace})
		}
	}
	return out, walkErr
}

// setsErrtrace: `set -E`, `set -eE...`, `set -o errtrace`, `set -euo errtrace`.
func setsErrtrace(c *syntax.CallExpr) bool {
	if len(c.Args) < 2 || c.Args[0].Lit() != "set" {
		return false
	}
	args := c.Args[1:]
	for i, a := range args {
		w := a.Lit()
		if !strings.HasPrefix(w, "-") || strings.HasPrefix(w, "--") {
			continue
		}
		if strings.Contains(w, "E") {
			return true
		}
		// -o (alone or ending a cluster) takes the next word as an option.
		if strings.HasSuffix(w, "o") && i+1 < len(args) && args[i+1].Lit() == "errtrace" {
			return true
		}
	}
	return false
}

// trapArgs returns the action text and signal names of `trap ACTION SIG...`.
// An action that only resets (-) or ignores (an empty string) has nothing
// to check.
func trapArgs(c *syntax.CallExpr, src []byte) (action, signals string, ok bool) {
	if len(c.Args) < 3 || c.Args[0].Lit() != "trap" {
		return "", "", false
	}
	w := c.Args[1]
	if len(w.Parts) != 1 {
		return "", "", false
	}
	switch q := w.Parts[0].(type) {
	case *syntax.Lit:
		action = q.Value
	case *syntax.SglQuoted:
		action = q.Value
	case *syntax.DblQuoted:
		// The source text between the quotes: expansions stay as words,
		// which is all the structure the check needs.
		action = string(src[q.Left.Offset()+1 : q.Right.Offset()])
	default:
		return "", "", false
	}
	if strings.TrimSpace(action) == "" || action == "-" {
		return "", "", false
	}
	var sigs []string
	for _, a := range c.Args[2:] {
		sigs = append(sigs, a.Lit())
	}
	return action, strings.Join(sigs, " "), true
}

func last(stmts []*syntax.Stmt) *syntax.Stmt {
	if len(stmts) == 0 {
		return nil
	}
	return stmts[len(stmts)-1]
}

// endsInAnd returns the && list that is the last command run by s, if any.
func endsInAnd(s *syntax.Stmt) *syntax.BinaryCmd {
	if s == nil || s.Background || s.Negated {
		return nil
	}
	switch c := s.Cmd.(type) {
	case *syntax.BinaryCmd:
		if c.Op == syntax.AndStmt {
			return c
		}
	case *syntax.Block:
		return endsInAnd(last(c.Stmts))
	case *syntax.Subshell:
		return endsInAnd(last(c.Stmts))
	case *syntax.IfClause:
		for b := c; b != nil; b = b.Else {
			if and := endsInAnd(last(b.Then)); and != nil {
				return and
			}
		}
	case *syntax.CaseClause:
		for _, item := range c.Items {
			if and := endsInAnd(last(item.Stmts)); and != nil {
				return and
			}
		}
	case *syntax.WhileClause:
		return endsInAnd(last(c.Do))
	case *syntax.ForClause:
		return endsInAnd(last(c.Do))
	}
	return nil
}
