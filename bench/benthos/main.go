// The bench's Benthos peer: a minimal Benthos 4 distribution with only the components
// the peer's config uses (kafka_franz input, mongodb output, the pure processors), built
// the way Benthos documents custom distributions. Benthos is MIT-licensed; the binary is
// built by scripts/bench into the gitignored .cache/ and never committed.
package main

import (
	"context"

	"github.com/benthosdev/benthos/v4/public/service"

	_ "github.com/benthosdev/benthos/v4/public/components/kafka"
	_ "github.com/benthosdev/benthos/v4/public/components/mongodb"
	_ "github.com/benthosdev/benthos/v4/public/components/pure"
)

func main() {
	service.RunCLI(context.Background())
}
