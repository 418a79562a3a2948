"""The bucket as a tree of :class:`FileTreeNode` (``DIR`` / ``FILE``), and a streaming listing.

Listings are paginated (1,000 keys per request) and streamed: :meth:`Browser.iter_objects`
holds one page at a time, which is what the mirror uses; :meth:`Browser.walk` builds the
whole tree for a person or a view to look at.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar

from s3sync.errors import NotFoundError
from s3sync.settings import Settings
from s3sync.transport import RemoteObject, Transport

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

__all__ = ["Browser", "FileTreeNode"]


class FileTreeNode:
    """A folder (``DIR``) or an object (``FILE``) of the bucket.

    Children are reached by name (``node["F0001"]``, ``node.children["F0001"]``) and iterate
    in name order. Files carry ``size``, ``etag`` and ``last_modified``.
    """

    DIR: ClassVar[str] = "dir"
    FILE: ClassVar[str] = "file"
    #: The original django_s3 spellings.
    Dir: ClassVar[str] = DIR
    File: ClassVar[str] = FILE

    __slots__ = ("children", "etag", "last_modified", "name", "path", "size", "type")

    def __init__(
        self,
        name: str,
        path: str,
        type: str,  # noqa: A002 - the original API's attribute name
        *,
        size: int | None = None,
        etag: str | None = None,
        last_modified: datetime | None = None,
    ) -> None:
        self.name = name
        self.path = path
        self.type = type
        self.size = size
        self.etag = etag
        self.last_modified = last_modified
        self.children: dict[str, FileTreeNode] = {}

    @property
    def is_dir(self) -> bool:
        """True for a folder."""
        return self.type == FileTreeNode.DIR

    @property
    def is_file(self) -> bool:
        """True for an object."""
        return self.type == FileTreeNode.FILE

    def __getitem__(self, name: str) -> FileTreeNode:
        return self.children[name]

    def __contains__(self, name: object) -> bool:
        return name in self.children

    def __iter__(self) -> Iterator[FileTreeNode]:
        return iter(sorted(self.children.values(), key=lambda n: n.name))

    def __len__(self) -> int:
        return len(self.children)

    def __repr__(self) -> str:
        return f"FileTreeNode({self.type}, {self.path!r})"

    def iter_files(self) -> Iterator[FileTreeNode]:
        """Every FILE below this node, depth first, in name order."""
        stack = [self]
        while stack:
            node = stack.pop()
            if node.is_file:
                yield node
            stack.extend(reversed(list(node)))

    def to_dict(self) -> dict[str, Any]:
        """Plain data for ``s3sync tree --json``."""
        out: dict[str, Any] = {"name": self.name, "path": self.path, "type": self.type}
        if self.is_file:
            out |= {
                "size": self.size,
                "etag": self.etag,
                "last_modified": self.last_modified.isoformat() if self.last_modified else None,
            }
        else:
            out["children"] = [c.to_dict() for c in self]
        return out


class Browser:
    """Walk the bucket; ``Browser()`` reads settings from the environment."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        client: S3Client | None = None,
        transport: Transport | None = None,
    ) -> None:
        self.transport = transport if transport is not None else Transport(settings, client=client)
        self.settings = self.transport.settings

    def iter_objects(self, prefix: str = "") -> Iterator[RemoteObject]:
        """Stream every object under ``prefix`` (a raw key prefix), in key order."""
        for page in self.transport.list_pages(prefix):
            yield from page

    def walk(self, path: str = "") -> FileTreeNode:
        """The tree under ``path`` (a folder such as ``VASE/F0001``, or ``''`` for the bucket).

        Raises :class:`NotFoundError` when nothing exists under a non-empty ``path``.
        """
        path = path.strip("/")
        prefix = f"{path}/" if path else ""
        root = FileTreeNode(path.rsplit("/", 1)[-1] if path else "", path, FileTreeNode.DIR)
        found = False
        for obj in self.iter_objects(prefix):
            found = True
            self._insert(root, obj, obj.key[len(prefix) :])
        if found or not path:
            return root
        single = self.transport.head(path)
        if single is not None:
            return FileTreeNode(
                path.rsplit("/", 1)[-1],
                path,
                FileTreeNode.FILE,
                size=single.size,
                etag=single.etag,
                last_modified=single.last_modified,
            )
        raise NotFoundError(
            f"s3://{self.transport.bucket}/{path}: no such folder or object", bucket=self.transport.bucket, key=path
        )

    @staticmethod
    def _insert(root: FileTreeNode, obj: RemoteObject, relative: str) -> None:
        parts = relative.split("/")
        node = root
        for depth, part in enumerate(parts[:-1]):
            child = node.children.get(part)
            if child is None or not child.is_dir:
                sub_path = "/".join(filter(None, [root.path, *parts[: depth + 1]]))
                # A key that is both an object and a prefix ("a" and "a/b"): the folder wins.
                child = FileTreeNode(part, sub_path, FileTreeNode.DIR)
                node.children[part] = child
            node = child
        leaf = parts[-1]
        if leaf == "":  # a "folder/" marker object
            return
        if leaf in node.children and node.children[leaf].is_dir:
            return  # keep the folder; the object of the same name is shadowed in the tree
        node.children[leaf] = FileTreeNode(
            leaf,
            obj.key,
            FileTreeNode.FILE,
            size=obj.size,
            etag=obj.etag,
            last_modified=obj.last_modified,
        )
