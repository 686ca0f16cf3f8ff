// ocivalidate checks an OCI bundle's config.json with runtime-tools' validate
// package: every check except the JSON schema (which it would fetch from the
// network). Prints one line per failed check and exits 1, or prints "ok".
package main

import (
	"fmt"
	"os"
	"sort"

	multierror "github.com/hashicorp/go-multierror"
	"github.com/opencontainers/runtime-tools/validate"
)

func failed(err error) bool {
	if err == nil {
		return false
	}
	if me, ok := err.(*multierror.Error); ok {
		return me != nil && len(me.Errors) > 0
	}
	return true
}

func main() {
	v, err := validate.NewValidatorFromPath(os.Args[1], true, "linux")
	if err != nil {
		fmt.Println("load:", err)
		os.Exit(2)
	}
	checks := map[string]func() error{
		"root": v.CheckRoot, "semver": v.CheckSemVer, "hooks": v.CheckHooks, "process": v.CheckProcess,
		"mounts": v.CheckMounts, "platform": v.CheckPlatform, "annotations": v.CheckAnnotations, "linux": v.CheckLinux,
	}
	names := make([]string, 0, len(checks))
	for name := range checks {
		names = append(names, name)
	}
	sort.Strings(names)
	bad := false
	for _, name := range names {
		if err := checks[name](); failed(err) {
			fmt.Printf("%s: %v\n", name, err)
			bad = true
		}
	}
	if bad {
		os.Exit(1)
	}
	fmt.Println("ok")
}
