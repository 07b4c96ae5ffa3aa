/**
 * Photos in the demo (CONTRACT §11): the attach button, files pasted or dropped onto the thread, a photo send's
 * progress, the thumbnails of a message and the viewer of one photo. Every picture's URL comes from
 * `useAttachmentUrl` (a short-lived signed URL: an `<img>` cannot send the access token).
 */
import type { Attachment } from "@listings-chat/client/protocol";
import { type PendingMessage, useAttachmentUrl } from "@listings-chat/react";
import { type ClipboardEvent, type DragEvent, useCallback, useEffect, useRef, useState } from "react";

/** What the file picker offers: the types the server takes. */
const ACCEPTED_TYPES = "image/jpeg,image/png,image/webp";
/** Thumbnails are drawn at most this wide and high (the server's are at most 320 px). */
const THUMB_BOX_PX = 200;

/** The size to draw a photo at within a square box, its proportions kept. */
function fitted(attachment: Attachment, box: number): { width: number; height: number } {
  const scale = Math.min(1, box / Math.max(attachment.width, attachment.height, 1));
  return {
    width: Math.max(1, Math.round(attachment.width * scale)),
    height: Math.max(1, Math.round(attachment.height * scale)),
  };
}

/** A paper clip, drawn: an emoji needs a font with it, which a bare Linux browser may lack. */
function PaperClip() {
  return (
    <svg className="icon" viewBox="0 0 24 24" width="22" height="22" aria-hidden="true">
      <path
        d="M16.5 6.5 8.9 14.1a2 2 0 0 0 2.8 2.8l7.6-7.6a4 4 0 0 0-5.6-5.6l-7.9 7.9a6 6 0 0 0 8.5 8.5l6.3-6.3"
        fill="none"
        stroke="currentColor"
        strokeWidth="1.8"
        strokeLinecap="round"
        strokeLinejoin="round"
      />
    </svg>
  );
}

/** "Attach photos": a label that opens the file picker; its input stays in the page for tests to fill. */
export function AttachButton({ disabled, onFiles }: { disabled: boolean; onFiles(files: File[]): void }) {
  return (
    <label className={`attach${disabled ? " disabled" : ""}`} data-testid="attach-button" title="Attach photos">
      <PaperClip />
      <span className="visually-hidden">Attach photos</span>
      <input
        type="file"
        className="visually-hidden"
        data-testid="attach-input"
        accept={ACCEPTED_TYPES}
        multiple
        disabled={disabled}
        onChange={(e) => {
          const files = [...(e.target.files ?? [])];
          // Cleared, so that choosing the same file again is a change too.
          e.target.value = "";
          if (files.length > 0) onFiles(files);
        }}
      />
    </label>
  );
}

/** Files pasted (a screenshot, an image copied from another page) are sent as photos; text pastes as text. */
export function pastedFiles(e: ClipboardEvent): File[] {
  const files = [...e.clipboardData.files];
  if (files.length > 0) e.preventDefault();
  return files;
}

/**
 * Dragging files over the thread and dropping them there: `dropping` while files hover (for the outline),
 * and the handlers to spread onto the thread's element.
 */
export function useFileDrop(onFiles: (files: File[]) => void, disabled: boolean) {
  const [dropping, setDropping] = useState(false);
  const carriesFiles = (e: DragEvent) => e.dataTransfer.types.includes("Files");
  return {
    dropping,
    handlers: {
      onDragOver: (e: DragEvent) => {
        if (disabled || !carriesFiles(e)) return;
        // Without this the browser opens the file instead of dropping it here.
        e.preventDefault();
        e.dataTransfer.dropEffect = "copy";
        setDropping(true);
      },
      onDragLeave: (e: DragEvent) => {
        // Leaving for a child of the thread is not leaving the thread.
        if (!e.currentTarget.contains(e.relatedTarget as Node | null)) setDropping(false);
      },
      onDrop: (e: DragEvent) => {
        setDropping(false);
        if (disabled || !carriesFiles(e)) return;
        e.preventDefault();
        const files = [...e.dataTransfer.files];
        if (files.length > 0) onFiles(files);
      },
    },
  };
}

/** A photo send under way: how many photos, a progress bar while uploading, then "processing" on the server. */
export function PendingPhotos({ pending }: { pending: PendingMessage }) {
  const count = pending.photos?.length ?? 0;
  const progress = pending.progress ?? 0;
  return (
    <span className="pending-photos">
      <span className="photo-count">{count === 1 ? "1 photo" : `${count} photos`}</span>
      {pending.status === "sending" && (
        <>
          <progress className="upload" data-testid="upload-progress" max={1} value={progress} />
          <span className="muted">{progress < 1 ? `uploading… ${Math.round(progress * 100)} %` : "processing…"}</span>
        </>
      )}
    </span>
  );
}

function PhotoThumb({ attachment, onOpen }: { attachment: Attachment; onOpen(): void }) {
  const src = useAttachmentUrl(attachment, { thumb: true });
  const { width, height } = fitted(attachment, THUMB_BOX_PX);
  return (
    <button type="button" className="photo" aria-label="Open the photo" title="Open the photo" onClick={onOpen}>
      {src ? (
        <img data-testid="photo-thumb" src={src} width={width} height={height} alt="" />
      ) : (
        <span className="photo-placeholder" data-testid="photo-loading" />
      )}
    </button>
  );
}

/** The full photo over the page; Escape, or a click anywhere, closes it. */
function PhotoViewer({ attachment, onClose }: { attachment: Attachment; onClose(): void }) {
  const src = useAttachmentUrl(attachment);
  const closer = useRef<HTMLButtonElement>(null);
  useEffect(() => {
    closer.current?.focus();
    const onKey = (e: KeyboardEvent) => {
      if (e.key === "Escape") onClose();
    };
    document.addEventListener("keydown", onKey);
    return () => document.removeEventListener("keydown", onKey);
  }, [onClose]);
  return (
    <div className="photo-overlay" role="dialog" aria-modal="true" aria-label="Photo" data-testid="photo-overlay">
      <button ref={closer} type="button" className="photo-close" aria-label="Close the photo" onClick={onClose}>
        {src ? (
          <img data-testid="photo-viewer" src={src} width={attachment.width} height={attachment.height} alt="" />
        ) : (
          <span className="muted">loading…</span>
        )}
      </button>
    </div>
  );
}

/** The photos of a message, each opening the viewer. */
export function PhotoGrid({ attachments }: { attachments: readonly Attachment[] }) {
  const [open, setOpen] = useState<Attachment | null>(null);
  const close = useCallback(() => setOpen(null), []);
  return (
    <span className="photos" data-testid="photos">
      {attachments.map((attachment) => (
        <PhotoThumb key={attachment.id} attachment={attachment} onOpen={() => setOpen(attachment)} />
      ))}
      {open && <PhotoViewer attachment={open} onClose={close} />}
    </span>
  );
}
