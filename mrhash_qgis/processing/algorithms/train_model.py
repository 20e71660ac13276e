"""mrhash:trainmodel — train a MrHash model from a primary source and auxiliary sources."""

from __future__ import annotations

from qgis.core import (
    QgsProcessing,
    QgsProcessingException,
    QgsProcessingOutputNumber,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFile,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterMultipleLayers,
    QgsProcessingParameterNumber,
    QgsProcessingParameterString,
)

from mrhash_qgis.contract.bands import parse_bands
from mrhash_qgis.contract.choices import (
    BITS,
    DEFAULT_AE_EPOCHS,
    DEFAULT_BITS,
    DEFAULT_CLUSTERS,
    DEFAULT_EPOCHS,
    DEFAULT_PATCH_SIZE,
    DEVICES,
)
from mrhash_qgis.contract.protocol import SourceEntry, TrainOptions, TrainRequest, TrainResult
from mrhash_qgis.core.i18n import tr
from mrhash_qgis.processing.algorithms.base import EngineAlgorithm, source_paths


class TrainModelAlgorithm(EngineAlgorithm):
    def name(self) -> str:
        return "trainmodel"

    def displayName(self) -> str:  # noqa: N802 (QGIS API)
        return tr("Train model")

    def shortHelpString(self) -> str:  # noqa: N802 (QGIS API)
        return tr("Trains an unsupervised MrHash model (no labels). PRIMARY: rasters or a "
                  "folder of rasters; it is the only source needed at query time. AUXILIARY: "
                  "other sources of the same place (other bands, SAR, another sensor), found "
                  "by coordinates; each raster is one source, and so is the auxiliary folder, "
                  "where the single-band files of one product (s2_B05.tif, s2_B06.tif, ...) "
                  "group.")

    def initAlgorithm(self, config=None):  # noqa: N802 (QGIS API)
        self.addParameter(QgsProcessingParameterMultipleLayers(
            "PRIMARY", tr("Primary raster(s)"), QgsProcessing.SourceType.TypeRaster, optional=True))
        self.addParameter(QgsProcessingParameterFile(
            "PRIMARY_FOLDER", tr("or a primary folder of rasters"), optional=True,
            behavior=QgsProcessingParameterFile.Behavior.Folder))
        self.addParameter(QgsProcessingParameterString(
            "PRIMARY_BANDS", tr("Primary bands (1-based, e.g. 4,3,2; empty = all)"), "",
            optional=True))
        self.addParameter(QgsProcessingParameterMultipleLayers(
            "AUXILIARY", tr("Auxiliary rasters (one source each)"),
            QgsProcessing.SourceType.TypeRaster, optional=True))
        self.addParameter(QgsProcessingParameterFile(
            "AUXILIARY_FOLDER", tr("Auxiliary folder (e.g. the band files of one product)"),
            optional=True, behavior=QgsProcessingParameterFile.Behavior.Folder))
        self.addParameter(QgsProcessingParameterEnum(
            "BITS", tr("Hash bits"), [str(b) for b in BITS], defaultValue=BITS.index(DEFAULT_BITS)))
        self.addParameter(QgsProcessingParameterNumber(
            "CLUSTERS", tr("Pseudo-label clusters"), QgsProcessingParameterNumber.Type.Integer,
            DEFAULT_CLUSTERS, minValue=2, maxValue=1000))
        self.addParameter(QgsProcessingParameterNumber(
            "EPOCHS", tr("Epochs"), QgsProcessingParameterNumber.Type.Integer, DEFAULT_EPOCHS,
            minValue=1, maxValue=1000))
        self.addParameter(QgsProcessingParameterNumber(
            "AE_EPOCHS", tr("Autoencoder epochs"), QgsProcessingParameterNumber.Type.Integer,
            DEFAULT_AE_EPOCHS,
            minValue=1, maxValue=1000))
        self.addParameter(QgsProcessingParameterNumber(
            "PATCH_SIZE", tr("Patch size (primary pixels)"),
            QgsProcessingParameterNumber.Type.Integer, DEFAULT_PATCH_SIZE, minValue=16,
            maxValue=1024))
        self.addParameter(QgsProcessingParameterEnum(
            "DEVICE", tr("Device"), list(DEVICES), defaultValue=0))
        self.addParameter(QgsProcessingParameterNumber(
            "SEED", tr("Random seed"), QgsProcessingParameterNumber.Type.Integer, 0))
        self.addParameter(QgsProcessingParameterFileDestination(
            "OUTPUT_MODEL", tr("Model package"), tr("MrHash model (*.safetensors)")))
        self.addOutput(QgsProcessingOutputNumber("SECONDS", tr("Training seconds")))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802 (QGIS API)
        primary = (self.parameterAsString(parameters, "PRIMARY_FOLDER", context)
                   or source_paths(parameters.get("PRIMARY"), context))
        if not primary:
            raise QgsProcessingException(tr("give primary rasters or a primary folder"))
        auxiliary = source_paths(parameters.get("AUXILIARY"), context)
        aux_folder = self.parameterAsString(parameters, "AUXILIARY_FOLDER", context)
        auxiliary += [aux_folder] if aux_folder else []
        output = self.parameterAsFileOutput(parameters, "OUTPUT_MODEL", context)
        bands = parse_bands(self.parameterAsString(parameters, "PRIMARY_BANDS", context))
        request = TrainRequest(
            output, SourceEntry.local([primary] if isinstance(primary, str) else primary,
                                      list(bands) if bands else None),
            [SourceEntry.local([path], None, f"aux{i}") for i, path in enumerate(auxiliary, 1)],
            options=TrainOptions(
                bits=BITS[self.parameterAsEnum(parameters, "BITS", context)],
                clusters=self.parameterAsInt(parameters, "CLUSTERS", context),
                epochs=self.parameterAsInt(parameters, "EPOCHS", context),
                ae_epochs=self.parameterAsInt(parameters, "AE_EPOCHS", context),
                patch_size=self.parameterAsInt(parameters, "PATCH_SIZE", context),
                device=DEVICES[self.parameterAsEnum(parameters, "DEVICE", context)],
                seed=self.parameterAsInt(parameters, "SEED", context)))
        trained = TrainResult.from_result(self.run_engine(request, feedback))
        feedback.pushInfo(tr("model {model} ({fingerprint})").format(
            model=trained.model, fingerprint=trained.fingerprint[:12]))
        return {"OUTPUT_MODEL": trained.model or output, "SECONDS": trained.seconds}
