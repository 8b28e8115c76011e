package nsdriver

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"sync"
	"time"
)

// warmPool keeps cfg.WarmPool booted instances per container image ahead of
// demand (design.md decision 9). An execution takes one, uses it once and
// destroys it; a replacement boots in the background. Per-run data travels
// only in RunCommand's env fields, so a pooled VM carries nothing of a run
// before it is taken.
type warmPool struct {
	vms    *instances
	size   int             // booted instances kept per image
	ctx    context.Context // ends with Shutdown; fills stop then
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	closed  bool
	idle    map[string][]*instance // image → booted instances
	filling map[string]int         // image → fills under way
}

// A failed fill tries again after fillRetryWait, doubling up to
// maxFillRetryWait, maxFillTries times in all: after that the next take
// starts a fresh one, so a pool whose image cannot boot does not create VMs
// unasked forever. A variable, so that tests need not wait seconds.
var fillRetryWait = time.Second

const (
	maxFillRetryWait = time.Minute
	maxFillTries     = 5
)

// poolMinLife is how much deadline an idle instance must have left to be
// handed out; one closer to its end is recycled.
const poolMinLife = 30 * time.Second

// newWarmPool starts a pool of size instances per image, filling image's
// at once and any other image's on its first use.
func newWarmPool(vms *instances, size int, image string) *warmPool {
	ctx, cancel := context.WithCancel(context.Background())
	p := &warmPool{vms: vms, size: size, ctx: ctx, cancel: cancel, idle: map[string][]*instance{}, filling: map[string]int{}}
	p.ensure(image)
	return p
}

// poolLabel identifies an image's pool without spelling the image out.
func poolLabel(image string) string {
	sum := sha256.Sum256([]byte(image))
	return hex.EncodeToString(sum[:6])
}

// ensure starts the pool of an image the first time it is asked for.
func (p *warmPool) ensure(image string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.idle[image]; ok || p.closed {
		return
	}
	p.idle[image] = []*instance{}
	p.topUpLocked(image)
}

// topUpLocked starts fills until image's idle and filling instances make
// the pool's size; callers hold mu.
func (p *warmPool) topUpLocked(image string) {
	for !p.closed && len(p.idle[image])+p.filling[image] < p.size {
		p.filling[image]++
		p.wg.Add(1)
		go p.fill(image)
	}
}

// fill boots one instance for image and adds it to the pool. A failed try
// is tried again after a wait that doubles, up to maxFillTries in all.
func (p *warmPool) fill(image string) {
	defer p.wg.Done()
	wait := fillRetryWait
	for try := 1; ; try++ {
		inst, err := p.boot(image)
		if err == nil {
			p.mu.Lock()
			p.filling[image]--
			if !p.closed {
				p.idle[image] = append(p.idle[image], inst)
				p.mu.Unlock()
				p.vms.logger.Debug("warm pool: instance ready", "instance", inst.InstanceID())
				return
			}
			p.mu.Unlock()
			p.vms.destroy(p.ctx, inst.InstanceID())
			return
		}
		if p.ctx.Err() != nil || try == maxFillTries || !sleepCtx(p.ctx, wait) {
			if p.ctx.Err() == nil {
				p.vms.logger.Warn("warm pool: could not boot an instance; the next execution tries again", "tries", try, "error", err)
			}
			p.mu.Lock()
			p.filling[image]--
			p.mu.Unlock()
			return
		}
		p.vms.logger.Warn("warm pool: could not boot an instance; trying again", "in", wait.String(), "error", err)
		wait = min(2*wait, maxFillRetryWait)
	}
}

// boot creates one pooled instance for image and waits until it is ready;
// one that fails to boot is destroyed.
func (p *warmPool) boot(image string) (*instance, error) {
	inst, err := p.vms.create(p.ctx, image, []Label{{Name: labelPrefix + "pool", Value: poolLabel(image)}})
	if err != nil {
		return nil, err
	}
	if err := p.vms.wait(p.ctx, inst); err != nil {
		p.vms.destroy(p.ctx, inst.InstanceID())
		return nil, err
	}
	return inst, nil
}

// take hands out a booted instance for image, if one is ready, and tops the
// pool up again — after a miss too, so fills that gave up are restarted by
// demand. Instances near their deadline are recycled instead.
func (p *warmPool) take(image string) (*instance, bool) {
	p.ensure(image)
	p.mu.Lock()
	defer p.mu.Unlock()
	defer p.topUpLocked(image)
	for !p.closed && len(p.idle[image]) > 0 {
		inst := p.idle[image][0]
		p.idle[image] = p.idle[image][1:]
		if time.Until(inst.Metadata.Deadline.Time) > poolMinLife {
			return inst, true
		}
		p.recycleLocked(inst.InstanceID())
	}
	return nil, false
}

func (p *warmPool) recycleLocked(id string) {
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		p.vms.destroy(p.ctx, id)
	}()
}

// renew moves a taken instance's deadline to now + duration, as if it had
// just been created. It runs beside the workload.
func (p *warmPool) renew(ctx context.Context, id string) {
	if err := p.vms.renew(ctx, id); err != nil && !errors.Is(err, context.Canceled) {
		p.vms.logger.Warn("warm pool: could not renew the deadline; the instance keeps its old one", "instance", id, "error", err)
	}
}

// shutdown stops filling, destroys idle instances and waits for every
// background goroutine.
func (p *warmPool) shutdown(ctx context.Context) error {
	p.mu.Lock()
	p.closed = true
	for image, insts := range p.idle {
		for _, inst := range insts {
			p.recycleLocked(inst.InstanceID())
		}
		p.idle[image] = nil
	}
	p.mu.Unlock()
	p.cancel() // destroy detaches from it, so the recycling goes on
	done := make(chan struct{})
	go func() {
		p.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
