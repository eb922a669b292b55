package register

import (
	"context"

	"strata/builder/publish"
)

// PublishFunc is builder/publish.Publish: the one code path that uploads an
// image and registers its datastore version, for `strata image publish`
// and for this post-processor alike.
type PublishFunc func(ctx context.Context, o publish.Options) (*publish.Result, error)
