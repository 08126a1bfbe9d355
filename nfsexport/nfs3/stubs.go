package nfs3

import (
	"github.com/blockrep/blockrep/nfsexport/rpc"
	"github.com/blockrep/blockrep/nfsexport/xdr"
)

func (h *Handler) getattr(c *call, d *xdr.Decoder, e *xdr.Encoder) error  { return rpc.ErrProcUnavail }
func (h *Handler) setattr(c *call, d *xdr.Decoder, e *xdr.Encoder) error  { return rpc.ErrProcUnavail }
func (h *Handler) lookup(c *call, d *xdr.Decoder, e *xdr.Encoder) error   { return rpc.ErrProcUnavail }
func (h *Handler) access(c *call, d *xdr.Decoder, e *xdr.Encoder) error   { return rpc.ErrProcUnavail }
func (h *Handler) readlink(c *call, d *xdr.Decoder, e *xdr.Encoder) error { return rpc.ErrProcUnavail }
func (h *Handler) read(c *call, d *xdr.Decoder, e *xdr.Encoder) error     { return rpc.ErrProcUnavail }
func (h *Handler) write(c *call, d *xdr.Decoder, e *xdr.Encoder) error    { return rpc.ErrProcUnavail }
func (h *Handler) create(c *call, d *xdr.Decoder, e *xdr.Encoder) error   { return rpc.ErrProcUnavail }
func (h *Handler) mkdir(c *call, d *xdr.Decoder, e *xdr.Encoder) error    { return rpc.ErrProcUnavail }
func (h *Handler) symlink(c *call, d *xdr.Decoder, e *xdr.Encoder) error  { return rpc.ErrProcUnavail }
func (h *Handler) mknod(c *call, d *xdr.Decoder, e *xdr.Encoder) error    { return rpc.ErrProcUnavail }
func (h *Handler) remove(c *call, d *xdr.Decoder, e *xdr.Encoder) error   { return rpc.ErrProcUnavail }
func (h *Handler) rmdir(c *call, d *xdr.Decoder, e *xdr.Encoder) error    { return rpc.ErrProcUnavail }
func (h *Handler) rename(c *call, d *xdr.Decoder, e *xdr.Encoder) error   { return rpc.ErrProcUnavail }
func (h *Handler) link(c *call, d *xdr.Decoder, e *xdr.Encoder) error     { return rpc.ErrProcUnavail }
func (h *Handler) readdir(c *call, d *xdr.Decoder, e *xdr.Encoder) error  { return rpc.ErrProcUnavail }
func (h *Handler) readdirplus(c *call, d *xdr.Decoder, e *xdr.Encoder) error {
	return rpc.ErrProcUnavail
}
func (h *Handler) fsstat(c *call, d *xdr.Decoder, e *xdr.Encoder) error   { return rpc.ErrProcUnavail }
func (h *Handler) fsinfo(c *call, d *xdr.Decoder, e *xdr.Encoder) error   { return rpc.ErrProcUnavail }
func (h *Handler) pathconf(c *call, d *xdr.Decoder, e *xdr.Encoder) error { return rpc.ErrProcUnavail }
func (h *Handler) commit(c *call, d *xdr.Decoder, e *xdr.Encoder) error   { return rpc.ErrProcUnavail }
