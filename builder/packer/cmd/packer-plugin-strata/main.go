// Command packer-plugin-strata is strata's Packer plugin: the builder
// "strata" (a strata build from a recipe), the provisioner
// "strata-elements" (elements and the agent applied over any build's
// communicator) and the post-processor "strata-register" (the image
// registered as a datastore version).
//
// main only registers the components; they live in builder/packer/.
package main

import (
	"fmt"
	"os"

	"github.com/hashicorp/packer-plugin-sdk/plugin"
	"github.com/hashicorp/packer-plugin-sdk/version"

	"strata/builder/packer/elements"
	"strata/builder/packer/register"
	"strata/builder/packer/strata"
	"strata/builder/publish"
)

// Stamped by the Makefile (-ldflags -X): a semantic version, as Packer
// requires of plugins, and the commit it was built from.
var (
	pluginVersion = "0.1.0"
	prerelease    = ""
	commit        = ""
)

func main() {
	set := plugin.NewSet()
	// The plugin's name is strata: the default component is "strata",
	// the others "strata-<name>".
	set.RegisterBuilder(plugin.DEFAULT_NAME, &strata.Builder{Version: pluginVersion})
	set.RegisterProvisioner("elements", new(elements.Provisioner))
	// The same publish as `strata image publish`.
	set.RegisterPostProcessor("register", &register.PostProcessor{Publish: publish.Publish})
	set.SetVersion(version.NewPluginVersion(pluginVersion, prerelease, commit))
	if err := set.Run(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
