// dockerfile-lint checks a Dockerfile without a Docker engine or registry access, in two parts:
//
//  1. BuildKit's own checks, the rules of `docker build --check` (moby/buildkit's dockerfile2llb
//     linter). Base images are not pulled: their config is stubbed, so checks that need the real
//     image config (e.g. InvalidBaseImagePlatform) are not meaningful here.
//  2. This project's rules (-project): multi-stage, pinned base images, `npm ci --omit=dev` and a
//     non-root USER in the final stage, no ENTRYPOINT, and CMD equal to -expect-cmd.
//
// Usage: dockerfile-lint [-project] [-expect-cmd "node dist/src/main.js"] Dockerfile
// Exit status: 0 all passed, 1 a check failed, 2 usage or I/O error.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/moby/buildkit/client/llb"
	"github.com/moby/buildkit/client/llb/sourceresolver"
	"github.com/moby/buildkit/frontend/dockerfile/dockerfile2llb"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/moby/buildkit/frontend/dockerfile/shell"
	"github.com/moby/buildkit/frontend/dockerui"
	"github.com/opencontainers/go-digest"
)

// offlineResolver answers every base image with a minimal non-empty linux image config.
type offlineResolver struct{}

func (offlineResolver) ResolveImageConfig(_ context.Context, ref string, opt sourceresolver.Opt) (string, digest.Digest, []byte, error) {
	arch, osName := "amd64", "linux"
	if opt.ImageOpt != nil && opt.ImageOpt.Platform != nil {
		arch, osName = opt.ImageOpt.Platform.Architecture, opt.ImageOpt.Platform.OS
	}
	config := map[string]any{
		"architecture": arch,
		"os":           osName,
		"config":       map[string]any{"Env": []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}},
		"rootfs":       map[string]any{"type": "layers", "diff_ids": []string{digest.FromString(ref).String()}},
	}
	dt, err := json.Marshal(config)
	return ref, "", dt, err
}

func main() {
	project := flag.Bool("project", false, "also check this project's rules")
	expectCmd := flag.String("expect-cmd", "", "with -project: the exec-form CMD the final stage must have, space separated")
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: dockerfile-lint [-project] [-expect-cmd CMD] <Dockerfile>")
		os.Exit(2)
	}
	path := flag.Arg(0)
	dt, err := os.ReadFile(path)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	ok := buildkitChecks(path, dt)
	if *project {
		ok = projectChecks(dt, *expectCmd) && ok
	}
	if !ok {
		os.Exit(1)
	}
}

func buildkitChecks(path string, dt []byte) bool {
	ctx := context.Background()
	source := llb.Local("dockerfile")
	definition, err := source.Marshal(ctx)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	sourceMap := llb.NewSourceMap(&source, filepath.Base(path), "Dockerfile", dt)
	sourceMap.Definition = definition
	results, err := dockerfile2llb.DockerfileLint(ctx, dt, dockerfile2llb.ConvertOpt{
		Config:       dockerui.Config{},
		SourceMap:    sourceMap,
		MetaResolver: offlineResolver{},
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	if err := results.PrintTo(os.Stdout, nil); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	if results.Error != nil {
		fmt.Print("\nBuildKit: the Dockerfile does not parse: ")
		results.PrintErrorTo(os.Stdout, nil)
		return false
	}
	if len(results.Warnings) > 0 {
		fmt.Printf("\nFAIL BuildKit checks (docker build --check rules): %d warning(s) above\n", len(results.Warnings))
		return false
	}
	fmt.Println("ok   BuildKit checks (docker build --check rules): no warnings")
	return true
}

var pinnedTag = regexp.MustCompile(`^[^@]+:[^:/@]+$|@sha256:[0-9a-f]{64}$`)

func projectChecks(dt []byte, expectCmd string) bool {
	ast, err := parser.Parse(bytes.NewReader(dt))
	if err != nil {
		fmt.Printf("FAIL parse: %v\n", err)
		return false
	}
	stages, metaArgs, err := instructions.Parse(ast.AST, nil)
	if err != nil {
		fmt.Printf("FAIL parse: %v\n", err)
		return false
	}
	allOK := true
	check := func(ok bool, what, detail string) {
		status := "ok  "
		if !ok {
			status = "FAIL"
			allOK = false
		}
		if detail != "" {
			what += " (" + detail + ")"
		}
		fmt.Printf("%s %s\n", status, what)
	}

	var globals []string
	for _, arg := range metaArgs {
		for _, kv := range arg.Args {
			if kv.Value != nil {
				globals = append(globals, kv.Key+"="+*kv.Value)
			}
		}
	}
	lex := shell.NewLex(ast.EscapeToken)
	stageNames := map[string]bool{}
	for _, stage := range stages {
		base, _, err := lex.ProcessWord(stage.BaseName, shell.EnvsFromSlice(globals))
		if err != nil {
			base = stage.BaseName
		}
		if !stageNames[strings.ToLower(base)] {
			check(pinnedTag.MatchString(base) && !strings.HasSuffix(base, ":latest"),
				fmt.Sprintf("stage %q: base image pinned to a tag or digest", stage.Name), base)
		}
		if stage.Name != "" {
			stageNames[strings.ToLower(stage.Name)] = true
		}
	}
	check(len(stages) >= 2, "multi-stage build", fmt.Sprintf("%d stages", len(stages)))
	if len(stages) == 0 {
		return false
	}
	final := stages[len(stages)-1]

	var user, cmd string
	var cmdExec, prodInstall, copiesFromStage, entrypoint bool
	for _, command := range final.Commands {
		switch c := command.(type) {
		case *instructions.UserCommand:
			user = c.User
		case *instructions.RunCommand:
			line := strings.Join(c.CmdLine, " ")
			if regexp.MustCompile(`\bnpm ci\b`).MatchString(line) && strings.Contains(line, "--omit=dev") {
				prodInstall = true
			}
		case *instructions.CopyCommand:
			if c.From != "" {
				copiesFromStage = true
			}
		case *instructions.CmdCommand:
			cmd, cmdExec = strings.Join(c.CmdLine, " "), !c.PrependShell
		case *instructions.EntrypointCommand:
			entrypoint = true
		}
	}
	name := final.Name
	if name == "" {
		name = "final"
	}
	check(prodInstall, fmt.Sprintf("stage %q installs production dependencies with `npm ci --omit=dev`", name), "")
	check(copiesFromStage, fmt.Sprintf("stage %q copies its build output from an earlier stage", name), "")
	userName := strings.SplitN(user, ":", 2)[0]
	check(user != "" && userName != "root" && userName != "0",
		fmt.Sprintf("stage %q runs as a non-root USER", name), "USER "+orNone(user))
	check(!entrypoint, fmt.Sprintf("stage %q has no ENTRYPOINT (CMD is the whole command)", name), "")
	if expectCmd != "" {
		check(cmdExec && cmd == expectCmd,
			fmt.Sprintf("stage %q CMD is the exec form of `%s`", name, expectCmd), "CMD "+orNone(cmd))
	}
	return allOK
}

func orNone(s string) string {
	if s == "" {
		return "<none>"
	}
	return s
}
