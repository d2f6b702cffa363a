import { LabIcon } from '@jupyterlab/ui-components';

import deploymentsSvg from '../style/icons/deployments.svg';

export const deploymentsIcon = new LabIcon({ name: 'jupyter-modeldeploy:deployments', svgstr: deploymentsSvg });
