# strata's Packer plugin, all three components (README: "Packer").
#
#   build "image":   the strata builder runs an image recipe; strata-register
#                    registers the image as a datastore version.
#   build "machine": any builder — here null, SSH to a machine that is already
#                    running — and strata-elements applies elements and bakes
#                    the strata agent in over Packer's communicator.
#
# Run from the repository root after `make build`:
#
#   packer plugins install --path bin/packer-plugin-strata strata.local/strata/strata
#   packer build -only 'image.*' -var cloud=mycloud ci/packer/strata.pkr.hcl
#   packer build -only 'machine.*' -var ssh_host=10.0.0.5 ci/packer/strata.pkr.hcl

packer {
  required_plugins {
    strata = {
      # Installed from bin/ with `packer plugins install --path`.
      source  = "strata.local/strata/strata"
      version = ">= 0.1.0"
    }
  }
}

variable "recipe" {
  type        = string
  default     = "images/mariadb-10.11.yaml"
  description = "The image recipe the strata builder runs."
}

variable "output_dir" {
  type    = string
  default = "out"
}

variable "elements_path" {
  type        = list(string)
  default     = []
  description = "Directories searched for elements before strata's own."
}

variable "cloud" {
  type        = string
  default     = null
  description = "clouds.yaml cloud of the Glance to publish to (null: the OS_* environment)."
}

variable "controller_url" {
  type        = string
  default     = null
  description = "The strata controller's API (null: from the service catalog)."
}

variable "elements" {
  type        = list(string)
  default     = ["strata-agent"]
  description = "Elements strata-elements applies to the running machine."
}

variable "element_env" {
  type    = map(string)
  default = {}
}

variable "ssh_host" {
  type    = string
  default = "127.0.0.1"
}

variable "ssh_port" {
  type    = number
  default = 22
}

variable "ssh_username" {
  type    = string
  default = "packer"
}

variable "ssh_private_key_file" {
  type    = string
  default = "~/.ssh/id_ed25519"
}

source "strata" "image" {
  recipe        = var.recipe
  output_dir    = var.output_dir
  elements_path = var.elements_path
}

source "null" "machine" {
  communicator         = "ssh"
  ssh_host             = var.ssh_host
  ssh_port             = var.ssh_port
  ssh_username         = var.ssh_username
  ssh_private_key_file = var.ssh_private_key_file
  ssh_timeout          = "15m"
}

build {
  name    = "image"
  sources = ["source.strata.image"]

  post-processor "strata-register" {
    cloud          = var.cloud
    controller_url = var.controller_url
  }
}

build {
  name    = "machine"
  sources = ["source.null.machine"]

  provisioner "strata-elements" {
    elements      = var.elements
    elements_path = var.elements_path
    agent         = "bin/strata-agent"
    env           = var.element_env
    use_sudo      = var.ssh_username != "root"
  }
}
