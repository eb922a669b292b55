// Package controller is the root of strata's compact control plane: the
// Trove-compatible API, the durable task engine, the agent endpoint, the
// registry of datastores and images, and the compute drivers the instances
// run on. It holds no code; each concern lives in its own subpackage:
//
//	store/          SQL database (SQLite or PostgreSQL), schema migrations
//	registry/       datastores, versions, flavors, validation rules
//	imagestore/     the image Store interface; local/ keeps images on disk
//	identity/       projects, users, tokens (the embedded Keystone's data)
//	auth/           who a request is: local tokens or a real Keystone
//	agentendpoint/  the controller's end of agent/wire: the agents' SSH
//	                server, its Store (SQLStore durable, MemStore in memory)
//	instances/      desired and reported instance state, shown status
//	configurations/ configuration groups and their validation
//	tasks/          the durable task engine
//	lifecycle/      instance tasks: create, delete, restart, resize, configure
//	compute/        the compute Driver interface; qemu/ runs local VMs
//	api/            Trove v1.0 routes; api/keystone the Keystone v3 subset
//	server/         wiring of `strata controller serve`
//	cli/            the controller, datastore and image commands
//
// Agent and controller share only strata/agent/wire.
package controller
