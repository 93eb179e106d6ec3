"""Every dataset the harness knows: a key, its display name, the task it serves, its shipped layout.

Keys are what ``bench.toml`` (``[data.<key>]``), result rows and published rows use; display
names are what the papers' tables print.  ``folder`` is the directory name the dataset
ships as (the synthetic world writes the same name), ``layout`` a one-line reminder of
what a valid root contains.
"""
from __future__ import annotations

from dataclasses import dataclass

from bench.registry import Registry


@dataclass(frozen=True)
class DatasetSpec:
    key: str
    display: str
    task: str  # the task it is evaluated on, or "pretrain" for pretraining pools
    format: str  # the reader family (one module of bench/data per family)
    folder: str
    layout: str
    module: str  # bench.data.<module> holds read_<key>(root, problems=None)

    @property
    def reader(self) -> str:
        return f"bench.data.{self.module}:read_{self.key}"

    def load_reader(self):
        """The reader function, or None while its module does not provide it yet."""
        import importlib

        try:
            mod = importlib.import_module(f"bench.data.{self.module}")
        except ModuleNotFoundError as e:
            if e.name == f"bench.data.{self.module}":
                return None
            raise
        return getattr(mod, f"read_{self.key}", None)


DATASETS = Registry("dataset")


def _add(spec: DatasetSpec) -> None:
    DATASETS.add(spec.key, spec, task=spec.task, display=spec.display)


for _spec in (
    DatasetSpec("market1501", "Market1501", "reid", "market1501", "Market-1501-v15.09.15",
                "bounding_box_train/ query/ bounding_box_test/ with PPPP_cCsS_FFFFFF_NN.jpg", "reid"),
    DatasetSpec("msmt17", "MSMT17", "reid", "msmt17", "MSMT17_V1",
                "train/ test/ list_{train,val,query,gallery}.txt", "reid"),
    DatasetSpec("pa100k", "PA100k", "attribute", "par", "PA100k",
                "annotation.mat + data/*.jpg", "par"),
    DatasetSpec("peta", "PETA", "attribute", "par", "PETA",
                "PETA.mat + images/", "par"),
    DatasetSpec("peta_zs", "PETA_zs", "attribute", "par", "PETA",
                "RethinkPAR dataset_zs_run0.pkl (identity-disjoint split) + images/", "par"),
    DatasetSpec("rap", "RAP", "attribute", "par", "RAP",
                "RAP_annotation/RAP_annotation.mat + RAP_dataset/", "par"),
    DatasetSpec("rap_zs", "RAP_zs", "attribute", "par", "RAP",
                "RethinkPAR dataset_zs_run0.pkl + RAP_dataset/ (RethinkPAR keeps RAP-zs with RAPv2, in RAP2/)", "par"),
    DatasetSpec("cuhk_sysu", "CUHK-SYSU", "search", "cuhk_sysu", "CUHK-SYSU",
                "Image/SSM/ annotation/{Images,Person,pool}.mat annotation/test/train_test/", "search"),
    DatasetSpec("prw", "PRW", "search", "prw", "PRW",
                "frames/ annotations/*.jpg.mat frame_{train,test}.mat query_info.txt", "search"),
    DatasetSpec("citypersons", "CityPersons", "detection", "citypersons", "CityPersons",
                "leftImg8bit/{train,val}/<city>/ gtBboxCityPersons/{train,val}/<city>/", "citypersons"),
    DatasetSpec("lip", "LIP", "parsing", "lip", "LIP",
                "TrainVal_images/ TrainVal_parsing_annotations/ {train,val}_id.txt", "lip"),
    DatasetSpec("coco_keypoints", "COCO", "pose", "coco", "coco",
                "annotations/person_keypoints_{train,val}2017.json {train,val}2017/", "coco"),
    DatasetSpec("cuhk_pedes", "CUHK-PEDES", "text_search", "cuhk_pedes", "CUHK-PEDES",
                "reid_raw.json (file_path, id, captions, split) + imgs/", "pedes"),
    DatasetSpec("luperson", "LUPerson", "pretrain", "image_pool", "LUPerson",
                "unlabeled person crops in folders, or a list file", "pools"),
    DatasetSpec("luperson_ta", "LUPerson-TA", "pretrain", "image_text", "LUPerson-TA",
                "person crops with caption and attribute annotations", "pools"),
    DatasetSpec("imagenet", "ImageNet", "pretrain", "image_folder", "imagenet",
                "train/<class>/*.JPEG val/<class>/*.JPEG", "pools"),
):
    _add(_spec)


def dataset_spec(key: str) -> DatasetSpec:
    return DATASETS.get(key).obj
